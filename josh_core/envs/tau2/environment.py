"""The registry entry shared by the τ² domains (retail, airline): data, tasks, splits, envs."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from josh_core.envs import get_env
from josh_core.envs.base import Environment, Progress
from josh_core.envs.tau2 import data
from josh_core.envs.tau2.env import Tau2Domain, Tau2Env
from josh_core.envs.tau2.tasks import Tau2Task, task_from_benchmark
from josh_core.types import ToolCall


class Tau2Environment(Environment):
    """One τ²-bench domain. Splits: τ²'s `train` / `test` and `base` (every task)."""

    splits = ("train", "test", "base")
    josh_split = "train"
    eval_split = "test"
    metrics = "pass^k"
    default_user = "llm:embedded"
    user_kinds = ("llm", "script")
    plays_to_the_end = True

    def __init__(self, domain: Tau2Domain, title: str, description: str):
        self.domain = domain
        self.name = domain.env_name  # type: ignore[misc]
        self.title = title  # type: ignore[misc]
        self.description = description  # type: ignore[misc]

    # -- data -------------------------------------------------------------------------------
    def prepare(self, from_path: Path | None = None, force: bool = False,
                progress: Progress | None = None) -> dict[str, int]:
        counts = data.prepare(self.domain.name, from_path=from_path, force=force, progress=progress)
        _tasks.cache_clear()
        return counts

    def ensure_prepared(self) -> None:
        data.ensure_prepared(self.domain.name)

    # -- scenarios --------------------------------------------------------------------------
    def tasks(self) -> list[Tau2Task]:
        """Every task, in the benchmark's order."""
        self.ensure_prepared()
        tasks_file = data.domain_dir(self.domain.name) / "tasks.json"  # the cache follows the data dir
        return list(_tasks(self.domain.name, self.name, str(tasks_file), tasks_file.stat().st_mtime))

    def task_from_benchmark(self, item: dict[str, Any]) -> Tau2Task:
        """A tasks.json entry as a task whose goal calls are the gold writes that succeed when
        the gold actions are replayed (τ²-bench skips failing gold actions: retail tasks 64 and
        105 have one each, an exchange the database refuses; it could never be a goal)."""
        return _with_reachable_goals(self.domain, task_from_benchmark(item, self.name, self.domain.name,
                                                                      self.domain.write_tools))

    def load_split(self, split: str, limit: int | None = None) -> list[Tau2Task]:
        self.check_split(split)
        tasks = self.tasks()
        if split != "base":
            members = data.load_json(self.domain.name, "split_tasks.json").get(split, [])
            by_id = {t.task_id: t for t in tasks}
            tasks = [by_id[str(m)] for m in members if str(m) in by_id]
        return tasks[: max(limit, 0)] if limit is not None else tasks

    def get_task(self, task_id: str) -> Tau2Task:
        """A task by its id (`retail-5`) or the benchmark's (`5`)."""
        for task in self.tasks():
            if task_id in (task.id, task.task_id):
                return task
        raise KeyError(f"no {self.name} task {task_id!r}")

    def load_scenario_file(self, path: str | Path) -> list[Tau2Task]:
        """Tasks from a JSON file: stored tasks (`Tau2Task`) or entries of τ²'s tasks.json."""
        try:
            value = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(f"{path} could not be read: {error}") from None
        except ValueError as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            try:
                out.append(self._task_from_any(item))
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(f"{path} [{i}] is not a {self.name} task: {' '.join(str(error).split())[:300]}") from None
        return out

    def _task_from_any(self, item: Any) -> Tau2Task:
        if not isinstance(item, dict):
            raise ValueError("expected an object")
        if "evaluation_criteria" in item or "user_scenario" in item and "env" not in item:
            return self.task_from_benchmark(item)
        return self.scenario_from_json(item)

    def scenario_from_json(self, data_: Any) -> Tau2Task:
        task = Tau2Task.model_validate(data_)
        if task.env != self.name:
            raise ValueError(f"task {task.id} belongs to {task.env}, not {self.name}")
        return task

    # -- playing ----------------------------------------------------------------------------
    def make_env(self, scenario: Any) -> Tau2Env:
        self.ensure_prepared()
        return Tau2Env(self.domain, scenario)


def _with_reachable_goals(domain: Tau2Domain, task: Tau2Task) -> Tau2Task:
    env = Tau2Env(domain, task)
    state, succeeded = env.initial_state(), []
    for action in task.actions:
        record, state = env.apply(state, ToolCall(name=action.name, parameters=action.arguments))
        if action.name in domain.write_tools:
            succeeded.append(record.result.ok)
    # goal_calls are the gold writes, in order
    goals = [goal for goal, ok in zip(task.goal_calls, succeeded) if ok]
    return task if len(goals) == len(task.goal_calls) else task.model_copy(update={"goal_calls": goals})


@lru_cache(maxsize=8)
def _tasks(domain: str, env_name: str, path: str, stamp: float) -> tuple[Tau2Task, ...]:
    environment = get_env(env_name)
    return tuple(environment.task_from_benchmark(item) for item in data.load_json(domain, "tasks.json"))


def load_tables(domain: str) -> Any:
    return data.load_json(domain, "db.json")
