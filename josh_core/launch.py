"""Start `josh rollout` in a background process (the app's Launch page uses this).

The rollout writes every node to the database as it goes; the app follows it by reading the
same database, which the storage layer allows while the rollout process writes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from josh_core.policies.factory import decoding_mode
from josh_core.rollout import RolloutConfig


def rollout_args(config: RolloutConfig, db_path: str | Path) -> list[str]:
    """The `josh rollout` arguments that reproduce `config` on `db_path`."""
    args = ["rollout", *(["--josh"] if config.josh else [])]
    if config.scenario_file:
        args += ["--scenario-file", config.scenario_file]
    elif config.split:
        args += ["--split", config.split]
    if config.limit is not None:
        args += ["--limit", str(config.limit)]
    args += ["--agent", config.agent, "--user", config.user, "--style", config.style]
    if config.temperature is not None:
        args += ["--temperature", str(config.temperature)]
    if config.base_url:
        args += ["--base-url", config.base_url]
    mode = decoding_mode(config.constrained, config.grounded)
    if mode != "auto":
        args += ["--decoding", mode]
    args += [
        "--max-actions", str(config.max_actions_per_turn),
        "--beam", str(config.beam),
        "--branching", str(config.branching),
        "--max-turns", str(config.max_turns),
        "--seed", str(config.seed),
        "--concurrency", str(config.concurrency),
        "--db", str(db_path),
    ]
    return args


def start_rollout_process(config: RolloutConfig, db_path: str | Path, log_path: str | Path) -> subprocess.Popen:
    """Run the rollout in its own process (it survives page reloads), logging to `log_path`."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - handed to the child process
    return subprocess.Popen(
        [sys.executable, "-m", "josh_core", *rollout_args(config, db_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
