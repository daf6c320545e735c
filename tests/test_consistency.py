"""Things the code says in two places that must agree (each once disagreed):

- the Python floor in pyproject.toml and what the code uses (asyncio.Runner, tomllib: 3.11);
- the agent SPEC kinds the app's Launch page accepts and those the CLI builds (`oracle`);
- what agent style `auto` means, whether the agent is built from a SPEC or from a backend;
- `josh eval --decoding` names its flag when it refuses a value, as `josh rollout` does.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

from eval_fixtures import run_cli
from josh_core.launch import check_spec
from josh_core.policies.agents import build_model_agent
from josh_core.policies.compact_agent import CompactAgent
from josh_core.policies.factory import AGENT_KINDS, AgentOptions, resolve_style
from josh_core.policies.react_agent import ReactAgent

ROOT = Path(__file__).resolve().parent.parent
# Names of the standard library the code uses, with the Python version that added them.
NEWER_THAN_310 = {"asyncio.Runner": (3, 11), "tomllib": (3, 11), "asyncio.TaskGroup": (3, 11),
                  "ExceptionGroup": (3, 11), "typing.Self": (3, 11)}


def test_requires_python_is_the_floor_the_code_needs():
    floor_text = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = tuple(int(part) for part in re.fullmatch(r">=\s*(\d+)\.(\d+)", floor_text).groups())
    used = {name: version for name, version in NEWER_THAN_310.items()
            if any(re.search(rf"\b{re.escape(name)}\b", path.read_text()) for path in (ROOT / "josh_core").rglob("*.py"))}
    assert "asyncio.Runner" in used  # the check reads the code (rollout.py plays through one)
    assert all(floor >= version for version in used.values()), f"requires-python {floor_text} but the code uses {used}"
    assert hasattr(asyncio, "Runner")


def test_the_launch_page_accepts_every_agent_kind_the_cli_builds():
    assert "oracle" in AGENT_KINDS
    assert check_spec("oracle") == []
    for kind in AGENT_KINDS:
        assert not any("unknown kind" in problem for problem in check_spec(f"{kind}:x" if kind in (
            "openai", "hf", "vllm", "llamacpp", "script") else kind)), kind
    assert "unknown kind 'nope'" in check_spec("nope:x")[0]


class _NamedBackend:
    """Only a name: building an agent reads nothing else from its backend."""

    is_local = True

    def __init__(self, name: str):
        self.name = name


def test_style_auto_means_the_same_from_a_spec_and_from_a_backend():
    for spec, expected in [("vllm:embedded", CompactAgent), ("llamacpp:embedded", CompactAgent),
                           ("embedded@adapters/kto-1", CompactAgent), ("vllm:org/model", ReactAgent),
                           ("openai:gpt-4o", ReactAgent)]:
        agent = build_model_agent(_NamedBackend(spec), AgentOptions(style="auto"))
        assert type(agent) is expected, spec
        assert agent.style == resolve_style("auto", spec), spec


def test_eval_names_the_decoding_flag_when_it_refuses_a_value(tmp_path):
    result = run_cli("eval", "--db", str(tmp_path / "x.duckdb"), "--limit", "1", "--decoding", "fancy")
    assert result.exit_code == 1
    assert "--decoding: unknown decoding mode 'fancy'" in result.output
