"""ToolWOZ: MultiWOZ data, toolwoz-synth scenarios, the API executor and goal scoring.

Runtime (what playing, scoring and reading scenarios need):

    environment.py   ToolWOZEnvironment, the registry entry (`get_env("toolwoz")`)
    env.py           ToolWOZEnv(scenario): tools(), execute(), completed_goals(), score()
    apis.py          TOOLS, API_PARAMETERS, API_EXAMPLES (the seven APIs); db.py the databases
    scoring.py       goal completion and why a goal was missed; normalize.py the ⊆ test
    scenarios.py     load_split() / get_scenario() / load_scenario_file()
    data.py          load_database() / load_goal_model() / ensure_prepared() / prepare()
    store.py         where prepared data lives; types.py Scenario, DomainGoal, GoalCall
    goal_model.py    the goal statistics; stats.py what a split looks like beside them
    cli.py           `josh toolwoz ...` (added by the registry entry)

Build time (`build/`, making the data): fetch.py, generate.py (toolwoz-synth),
instructions.py (goal sentences), official.py (official-format loaders), prepare.py.
Build modules import runtime ones, never the reverse: the runtime reaches them only inside
`data.py`'s prepare functions. Imports are top-level and acyclic
(`tests/test_env_imports.py`). Code outside this package reaches ToolWOZ through the
registry (`josh_core.envs.get_env`), never through these modules.

Submodules are imported explicitly; importing this package loads nothing.
"""
