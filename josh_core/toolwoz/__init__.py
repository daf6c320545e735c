"""ToolWOZ: MultiWOZ data, toolwoz-synth scenarios, the API executor and goal scoring.

    data.py          prepare() / ensure_prepared() / load_db() / load_goal_model()
    scenarios.py     load_split() / get_scenario() / load_scenario_file()
    env.py           ToolWOZEnv(scenario): tools(), execute(), completed_goals(), score()
    apis.py          TOOLS, API_PARAMETERS, API_EXAMPLES (the seven APIs)
    normalize.py     normalize(), is_subset()
    reference_scoring.py  the original ToolWOZ code's serving and scoring (--scoring reference)
    generate.py      toolwoz-synth generation;   official.py  official-format loaders
    stats.py         split statistics;           types.py     Scenario, DomainGoal, GoalCall

Submodules are imported explicitly; importing this package loads nothing heavy.
"""
