"""Start `josh rollout` in a background process (the app's Launch page uses this).

The rollout writes every node to the database as it goes; the app follows it by reading the
same database, which the storage layer allows while the rollout process writes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from josh_core.envs import get_env
from josh_core.llm.specs import backend_kinds, backend_options, get_backend, split_spec
from josh_core.policies.factory import USER_KINDS, agent_kinds, decoding_mode
from josh_core.rollout import RolloutConfig
from josh_core.rollout.options import run_option


def rollout_args(
    config: RolloutConfig, db_path: str | Path, ray_address: str | None = None, ray_workers: int | None = None
) -> list[str]:
    """The `josh rollout` arguments that reproduce `config` on `db_path` (on Ray workers when
    `ray_address` is given: "local" starts Ray in the rollout's process)."""
    args = ["rollout", *(["--josh"] if config.josh else [])]
    if config.env != run_option("env").default:
        args += ["--env", config.env]
    if config.scoring is not None and config.scoring != get_env(config.env).default_scoring:
        args += ["--scoring", config.scoring]
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
    if ray_address:
        args += ["--ray", ray_address]
        if ray_workers:
            args += ["--ray-workers", str(ray_workers)]
    return args


def start_rollout_process(
    config: RolloutConfig, db_path: str | Path, log_path: str | Path,
    ray_address: str | None = None, ray_workers: int | None = None,
) -> subprocess.Popen:
    """Run the rollout in its own process (it survives page reloads), logging to `log_path`;
    on Ray workers when `ray_address` is given (see `rollout_args`)."""
    return start_josh_process(rollout_args(config, db_path, ray_address, ray_workers), log_path)


def start_josh_process(args: list[str], log_path: str | Path) -> subprocess.Popen:
    """`josh ARGS` in its own process group (it survives page reloads, and stopping it stops
    whatever it started), its output in `log_path`."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "josh_core", *[str(a) for a in args]],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own copy


def resume_args(run_id: str, db_path: str | Path) -> list[str]:
    """`josh rollout --resume RUN`: play a stopped run's unfinished conversations."""
    return ["rollout", "--resume", run_id, "--db", str(db_path)]


# -- checking a launch before it starts, following and stopping it ----------------------------

def check_spec(spec: str, role: str = "agent", base_url: str | None = None) -> list[str]:
    """Problems with an agent or user SPEC that can be seen without loading a model (a model
    SPEC's own checks come from its backend's registration, llm/specs.py)."""
    import json

    try:
        kind, rest = split_spec(spec)
    except ValueError as error:
        return [f"{role} SPEC: {error}"]
    kinds = agent_kinds() if role == "agent" else USER_KINDS
    if kind not in kinds:
        return [f"{role} SPEC {spec!r}: unknown kind {kind!r}; expected one of {', '.join(kinds)}"]
    if role == "user" and kind == "llm":
        return check_spec(rest, "agent", base_url) if rest else ["user SPEC llm: needs a model SPEC, e.g. llm:openai:MODEL"]
    if kind == "script":
        path = Path(rest).expanduser()
        if not rest:
            return [f"{role} SPEC script: needs a file, script:FILE"]
        if not path.is_file():
            return [f"{role} script {rest}: no such file"]
        try:
            from josh_core.policies.script import ScriptAgent, ScriptUser

            (ScriptAgent if role == "agent" else ScriptUser).from_file(path)
        except (ValueError, json.JSONDecodeError, OSError) as error:
            return [f"{role} script {rest}: {error}"]
        return []
    if kind in backend_kinds():
        return [f"{role} SPEC {spec}: {problem}" for problem in get_backend(kind).check(rest, base_url)]
    return []


def check_decoding(config: RolloutConfig) -> list[str]:
    """A decoding that needs the action grammar (grounded, grammar), asked of an agent whose
    backend cannot apply it (its registration says, llm/specs.py)."""
    if not config.constrained:
        return []
    try:
        kind, _ = split_spec(config.agent)
        entry = get_backend(kind)
    except ValueError:  # not a model SPEC: check_spec speaks of it
        return []
    if entry.grammar(backend_options(kind), config.base_url):
        return []
    mode = decoding_mode(config.constrained, config.grounded)
    return [f"decoding {mode}: {config.agent} cannot apply the action grammar here; use auto or free"]


def check_launch(config: RolloutConfig) -> list[str]:
    """Everything wrong with a launch that can be seen before a process starts."""
    problems = check_spec(config.agent, "agent", config.base_url) + check_spec(config.user, "user", config.base_url)
    problems += check_decoding(config)
    if config.scenario_file and not Path(config.scenario_file).expanduser().is_file():
        problems.append(f"scenario file {config.scenario_file}: no such file")
    if not config.scenario_file and config.split:
        from josh_core.envs import get_env

        splits = get_env(config.env).splits
        if config.split not in splits:
            problems.append(f"split {config.split!r}: expected one of {', '.join(splits)}")
    return problems


def launched_run_id(log_path: str | Path) -> str | None:
    """The run id a launched `josh rollout` announced in its log (None until it has)."""
    import re

    try:
        text = Path(log_path).read_text(errors="replace")
    except FileNotFoundError:
        return None
    match = re.search(r"^run (\S+): \d+ conversations", text, re.MULTILINE)
    return match.group(1) if match else None


def stop_process(pid: int, interrupt: bool = False) -> bool:
    """Stop a launched rollout and everything it started (its process group); False if it had
    already ended. The run stays resumable (`josh rollout --resume RUN`). `interrupt`: send
    Ctrl-C (SIGINT) rather than SIGTERM, so the process can record that it stopped (`josh
    train` closes its training row as failed)."""
    import os
    import signal

    try:
        os.killpg(pid, signal.SIGINT if interrupt else signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


class RunProgress:
    """How far a run has got, by conversations, search steps and nodes written (and, for a
    distributed run, by worker: `workers`, empty otherwise)."""

    def __init__(self, run, frame, workers=None):
        import pandas as pd

        self.run = run
        self.workers = workers if workers is not None else pd.DataFrame()
        self.max_turns = int((run.config or {}).get("max_turns") or 0)
        self.conversations = len(frame)
        statuses = frame["status"].tolist() if len(frame) else []
        self.done = statuses.count("done")
        self.failed = statuses.count("failed")
        self.running = statuses.count("running")
        self.nodes = int(frame["node_count"].fillna(0).sum()) if len(frame) else 0
        steps = frame["steps"].fillna(0).tolist() if len(frame) else []
        # A finished conversation has taken all the steps it will take (it may stop early).
        self.steps_done = sum(self.max_turns if s in ("done", "failed") else min(int(n), self.max_turns)
                              for s, n in zip(statuses, steps))  # fmt: skip
        self.steps_total = self.conversations * self.max_turns
        self.frame = frame

    @property
    def fraction(self) -> float:
        return self.steps_done / self.steps_total if self.steps_total else (1.0 if self.run.status != "running" else 0.0)

    @property
    def finished(self) -> bool:
        return self.conversations > 0 and self.done + self.failed == self.conversations

    def summary(self) -> str:
        return (f"{self.done + self.failed} of {self.conversations} conversations finished"
                + (f" ({self.failed} failed)" if self.failed else "")
                + f" · step {self.steps_done} of {self.steps_total} · {self.nodes} nodes written")  # fmt: skip


def run_progress(db, run_id: str) -> RunProgress:
    from josh_core.storage import reads

    return RunProgress(reads.get_run(db, run_id), reads.conversations_frame(db, run_id=run_id),
                       reads.worker_progress(db, run_id))


# -- training from the app: `josh train` and `josh selftrain` as background processes ----------

class TrainSetting:
    """One setting of a training kind: its default and help as `josh train` resolves them."""

    def __init__(self, name: str, default, help: str, source: str):
        self.name, self.default, self.help, self.source = name, default, help, source

    def __repr__(self) -> str:
        return f"TrainSetting({self.name}={self.default!r})"


def training_settings(kind: str) -> list[TrainSetting]:
    """The settings the app's form offers for `kind` (the registry's `form_settings`: the common
    ones and the kind's own), with the defaults `josh train` uses (its config class)."""
    from josh_core.train.kinds import get_kind, settings

    spec = get_kind(kind)
    offered = spec.form_settings()
    by_name = {s.name: s for s in settings(kind)}
    return [TrainSetting(name, by_name[name].default, by_name[name].help, f"{spec.config.__name__} ({spec.name})")
            for name in offered]


def changed_settings(kind: str, values: dict) -> dict:
    """The values that differ from `kind`'s defaults (what a config file needs to say)."""
    defaults = {s.name: s.default for s in training_settings(kind)}
    return {k: v for k, v in values.items() if k in defaults and v != defaults[k]}


def train_args(kind: str, data: str | Path | None, base: str, out: str | Path, db_path: str | Path,
               config_file: str | Path | None = None) -> list[str]:
    """The `josh train` arguments of a training launched from the app (an online kind plays
    the environment: no data)."""
    args = ["train", "--kind", kind] + (["--data", str(data)] if data is not None else []) + [
        "--base", base, "--out", str(out)]
    if config_file is not None:
        args += ["--config", str(config_file)]
    return args + ["--db", str(db_path)]


def write_train_config(path: str | Path, settings: dict) -> Path:
    """The settings as a `josh train --config` JSON file."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return path


def selftrain_defaults() -> dict:
    """`josh selftrain`'s settings and their defaults (SelftrainConfig)."""
    from josh_core.train.selftrain import SelftrainConfig

    return {name: info.get_default(call_default_factory=True) for name, info in SelftrainConfig.model_fields.items()}


def selftrain_problem(**settings) -> str | None:
    """What is wrong with an experiment's settings, checked by `josh selftrain`'s own config
    (SelftrainConfig) before a process is started; None when nothing is."""
    from pydantic import ValidationError

    from josh_core.train.selftrain import SelftrainConfig, settings_problems

    try:
        SelftrainConfig(**settings)
    except ValidationError as error:
        return settings_problems(error)
    return None


def selftrain_args(db_path: str | Path, *, experiment: str, base: str, kinds: list[str], rounds: int,
                   train_limit: int, eval_limit: int, beam: int, branching: int, max_turns: int,
                   filter: str, max_steps: int | None = None) -> list[str]:
    """The `josh selftrain` arguments of an experiment launched from the app."""
    args = ["selftrain", "--experiment", experiment, "--base", base]
    for kind in kinds:
        args += ["--kind", kind]
    args += ["--rounds", str(rounds), "--train-limit", str(train_limit), "--eval-limit", str(eval_limit),
             "--beam", str(beam), "--branching", str(branching), "--max-turns", str(max_turns), "--filter", filter]
    if max_steps:
        args += ["--max-steps", str(max_steps)]
    return args + ["--db", str(db_path)]


def export_training_data(db, options, run_ids: list[str], out: str | Path) -> int:
    """Write the export of `run_ids` (every run when empty) with `options` to `out`, as the
    Export page and `josh export` do; returns the rows written. Several runs go through the same
    extraction in one pass, so a row two runs share is written once."""
    from itertools import chain

    from josh_core.extract import check_output_path, export_dataset, iter_rows, load_sources, write_jsonl

    if len(run_ids) <= 1:
        return export_dataset(db, options, out, run_id=run_ids[0] if run_ids else None).rows
    check_output_path(out, db.path)
    sources = chain.from_iterable(
        load_sources(db, run_id=run, use_annotations=options.use_annotations, min_reward=options.min_reward,
                     prompt=options.prompt)
        for run in run_ids
    )  # fmt: skip
    return write_jsonl(iter_rows(sources, options), out)


def training_for_adapter(db, out: str | Path):
    """The newest training recorded for the adapter folder `out` (None until `josh train` has
    checked its data and recorded it)."""
    from josh_core.storage.trainings import list_trainings

    target = str(Path(out).resolve())
    found = [t for t in list_trainings(db) if t.adapter_path == target]
    return found[-1] if found else None


def run_is_played(db_path: str | Path, run_id: str) -> bool:
    """Whether a process is playing the run now (it holds the run's lock). A run left 'running'
    or 'pending' by a process that died or was stopped is not: it can be resumed."""
    from josh_core.storage.locks import RunBusy, run_lock

    try:
        with run_lock(db_path, run_id):
            return False
    except RunBusy:
        return True


UNFINISHED_RUN_STATUSES = ("running", "incomplete", "interrupted", "stopped")


def resumable(run_status: str, conversations: int, finished: int, played: bool) -> bool:
    """A run to offer resume for: conversations left to play and nobody playing them."""
    return run_status in UNFINISHED_RUN_STATUSES and finished < conversations and not played
