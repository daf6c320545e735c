"""vLLM for real, on its CPU build: the `vllm:` offline backend and `vllm serve` behind `openai:`.

`bash scripts/test-vllm.sh` runs this file in the venv of `scripts/setup-vllm.sh` with
JOSH_REQUIRE_VLLM=1: a missing vLLM then fails every test here instead of skipping it. Without
the switch (the default suite, whose venv has no vLLM) they skip.

What runs, with the embedded model (its transformers folder, `josh models hf-dir`):
- the offline engine through `VLLMBackend`: sampling, `n`, seeds, the compact and ReACT action
  grammars and the function-calling JSON schema (vLLM's llguidance backend);
- the README's CPU commands, in order, as subprocesses: a JOSH rollout with `vllm:embedded`,
  `josh export` of it, `josh train` of a KTO adapter (2 steps), a rollout with the adapter
  offline, then `vllm serve` with `--enable-lora --lora-modules` and JOSH rollouts with
  `openai:` against it, base model and adapter. Every stored agent generation must parse.

Each engine start costs about half a minute here; the whole file takes several minutes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from josh_core.llm.base import ChatRequest, SamplingParams
from josh_core.llm.structured import (
    REACT_MAX_TOKENS,
    check_react,
    fc_constraint,
    parse_fc_output,
    react_constraint,
)
from josh_core.policies.compact_agent import COMPACT_MAX_TOKENS
from josh_core.policies.prompts import react_prompt_messages
from josh_core.envs.toolwoz.apis import API_EXAMPLES, TOOLS
from josh_core.types import Message

REQUIRED = os.environ.get("JOSH_REQUIRE_VLLM") == "1"
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
README = Path(__file__).resolve().parent.parent / "README.md"
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_VLLM and not REQUIRED,
                       reason="vLLM is not installed (bash scripts/setup-vllm.sh; bash scripts/test-vllm.sh)"),
]

# The README's CPU section, command for command ($MODEL, $PORT and relative paths are filled in
# by the tests; test_readme_shows_these_commands keeps the two equal).
ROLLOUT = "josh rollout --josh --split train --limit 1 --beam 2 --max-turns 2"
COMMANDS = {
    "model": "MODEL=$(josh models hf-dir)",
    "offline": f"{ROLLOUT} --agent vllm:embedded --db vllm.duckdb",
    "export": "josh export --db vllm.duckdb --kind kto --out kto.jsonl --all-rewards",
    "train": "josh train --kind kto --data kto.jsonl --base embedded --out out/kto-1 --max-steps 2",
    "offline_lora": f"{ROLLOUT} --agent vllm:embedded@out/kto-1 --db vllm.duckdb",
    "serve": "VLLM_CPU_KVCACHE_SPACE=1 vllm serve $MODEL --enable-lora --lora-modules kto-1=out/kto-1 "
             "--max-lora-rank 64 --port $PORT",
    # The served model is the embedded one: its compact style, as `vllm:embedded` plays by default.
    "served_base": f"{ROLLOUT} --style compact --agent openai:$MODEL --base-url http://127.0.0.1:$PORT/v1 "
                   "--db served.duckdb",
    "served_lora": f"{ROLLOUT} --style compact --agent openai:kto-1 --base-url http://127.0.0.1:$PORT/v1 "
                   "--db served.duckdb",
}


@pytest.fixture(scope="module")
def vllm_installed() -> None:
    if not HAVE_VLLM:
        pytest.fail("vLLM is required here (JOSH_REQUIRE_VLLM=1): bash scripts/setup-vllm.sh")


@pytest.fixture(scope="module")
def model_dir(vllm_installed) -> str:
    from josh_core.llm.embedded import embedded_model_dir

    return str(embedded_model_dir())


def run(command: str, cwd: Path, timeout: float = 900, **values: str) -> subprocess.CompletedProcess:
    """One README command (its `$NAME`s filled in from `values`), with this venv's executables."""
    for name, value in values.items():
        command = command.replace(f"${name}", value)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    words = shlex.split(command)
    while words and "=" in words[0] and not words[0].startswith("-"):  # leading VAR=value
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    proc = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def agent_generations(db_path: Path, agent: str) -> list:
    """Every stored agent generation of the conversations this agent SPEC played."""
    from josh_core.storage import reads
    from josh_core.storage.db import Database

    db = Database(db_path, read_only=True)
    runs = {r.id for r in reads.list_runs(db) if r.agent_spec == agent}
    conversations = [c for c in reads.list_conversations(db) if c.run_id in runs]
    assert conversations and all(c.status == "done" for c in conversations), conversations
    trees = reads.load_trees(db, [c.id for c in conversations])
    return [g for tree in trees.values() for node in tree.agent_nodes() for g in node.generations]


# ------------------------------------------------------------------------ offline engine, in process

def opener_request(**update) -> ChatRequest:
    messages = react_prompt_messages(TOOLS, API_EXAMPLES, True) + [
        Message(role="user", content="I need a cheap restaurant in the centre that serves Italian food.")]
    request = ChatRequest(messages=messages, sampling=SamplingParams(temperature=0.7, top_k=50, top_p=0.75,
                                                                     max_tokens=96, seed=7))
    return request.model_copy(update=update)


class TestOfflineEngine:
    """One engine for these tests, stopped before the README commands start engines of their own
    (class scope: the machine is shared and each engine holds about 2.5 GB)."""

    @pytest.fixture(scope="class")
    def offline(self, model_dir):
        from josh_core.llm.vllm_backend import VLLMBackend

        backend = VLLMBackend("embedded")
        backend.load()
        yield backend
        backend.close()

    def test_sampling_n_and_seeds(self, offline):
        async def go():
            reseeded = opener_request().sampling.model_copy(update={"seed": 8})
            return await asyncio.gather(offline.chat(opener_request(n=4)), offline.chat(opener_request(n=4)),
                                        offline.chat(opener_request(n=4, sampling=reseeded)))

        first, again, other = asyncio.run(go())
        texts = [c.text for c in first.choices]
        assert len(texts) == 4 and all(texts)
        assert len(set(texts)) > 1  # n samples, not one sample repeated
        assert texts == [c.text for c in again.choices]  # a seed makes a request reproducible
        assert texts != [c.text for c in other.choices]
        assert first.prompt_tokens > 1000 and 0 < first.completion_tokens <= 4 * 96
        assert max(offline.batch_sizes) == 3  # the three requests ran as one generate

    @pytest.mark.parametrize("plan", [False, True], ids=["compact", "react"])
    def test_action_grammar_parses(self, offline, plan):
        # The budgets the agents give these grammars: every capped line fits, so every sample ends.
        budget = REACT_MAX_TOKENS if plan else COMPACT_MAX_TOKENS
        sampling = opener_request().sampling.model_copy(update={"max_tokens": budget})
        request = opener_request(n=8, constraint=react_constraint(TOOLS, plan=plan), sampling=sampling)
        response = asyncio.run(offline.chat(request))
        assert len(response.choices) == 8
        for choice in response.choices:
            check = check_react(choice.text, TOOLS, plan=plan)
            assert check.ok, (check, choice.text)

    def test_function_calling_schema(self, offline):
        request = opener_request(n=4, tools=TOOLS, constraint=fc_constraint(TOOLS))
        response = asyncio.run(offline.chat(request))
        for choice in response.choices:
            # The backend already turned tool-call JSON into tool calls; a reply is plain content.
            assert choice.tool_calls or choice.text, choice
            if choice.tool_calls:
                assert {c.name for c in choice.tool_calls} <= {t["function"]["name"] for t in TOOLS}
            else:
                parse_fc_output(json.dumps({"content": choice.text}))


# --------------------------------------------------------------- the README's commands, in order

@pytest.fixture(scope="module")
def workdir(tmp_path_factory, model_dir, toolwoz_data) -> Path:
    return tmp_path_factory.mktemp("vllm-readme")


def test_rollout_offline_then_export_and_train(workdir, model_dir):
    run(COMMANDS["offline"], workdir)
    generations = agent_generations(workdir / "vllm.duckdb", "vllm:embedded")
    assert generations and all(g.action != "format_error" for g in generations), generations
    run(COMMANDS["export"], workdir)
    assert (workdir / "kto.jsonl").read_text().strip()
    run(COMMANDS["train"], workdir)
    adapter = workdir / "adapters" / "kto-1"
    assert (adapter / "adapter_config.json").exists() and json.loads(
        (adapter / "adapter_config.json").read_text())["r"] == 64


def test_rollout_offline_with_the_adapter(workdir):
    if not (workdir / "adapters" / "kto-1").exists():
        pytest.fail("the adapter test above did not produce out/kto-1")
    run(COMMANDS["offline_lora"], workdir)
    generations = agent_generations(workdir / "vllm.duckdb", "vllm:embedded@out/kto-1")
    assert generations and all(g.action != "format_error" for g in generations)


def test_adapter_changes_the_model(workdir, model_dir):
    """The LoRA request reaches the weights: the adapter's log-probabilities of one prompt
    differ from the base model's (same engine, with and without the LoRARequest)."""
    from vllm import SamplingParams as VSamplingParams

    from josh_core.llm.vllm_backend import VLLMBackend, lora_request_for

    adapter = str(workdir / "adapters" / "kto-1")
    backend = VLLMBackend("embedded", adapter)
    backend.load()
    try:
        params = VSamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0)
        prompt = "Hello, I am looking for a hotel in the north of Cambridge."
        base = backend._llm.generate([prompt], params, use_tqdm=False)[0].prompt_logprobs
        tuned = backend._llm.generate([prompt], params, lora_request=lora_request_for(adapter), use_tqdm=False)[0]
        tuned = tuned.prompt_logprobs
        diffs = [abs(next(iter(a.values())).logprob - next(iter(b.values())).logprob)
                 for a, b in zip(base[1:], tuned[1:])]
        assert max(diffs) > 1e-4, diffs
    finally:
        backend.close()


@pytest.fixture(scope="module")
def server(workdir, model_dir):
    if not (workdir / "adapters" / "kto-1").exists():
        pytest.fail("the adapter test above did not produce out/kto-1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    command = COMMANDS["serve"].replace("$MODEL", model_dir).replace("$PORT", port)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    words = shlex.split(command)
    key, value = words.pop(0).split("=", 1)
    env[key] = value
    log = (workdir / "serve.log").open("w")
    process = subprocess.Popen(words, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while True:
            assert process.poll() is None, (workdir / "serve.log").read_text()[-6000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as response:
                    models = {m["id"] for m in json.load(response)["data"]}
                break
            except OSError:
                assert time.monotonic() < deadline, "vllm serve did not come up in 10 minutes"
                time.sleep(2)
        assert {model_dir, "kto-1"} <= models, models
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.mark.parametrize("which,agent", [("served_base", "openai:$MODEL"), ("served_lora", "openai:kto-1")],
                         ids=["base", "adapter"])
def test_rollout_against_vllm_serve(workdir, model_dir, server, which, agent):
    run(COMMANDS[which], workdir, MODEL=model_dir, PORT=server)
    generations = agent_generations(workdir / "served.duckdb", agent.replace("$MODEL", model_dir))
    assert generations and all(g.action != "format_error" for g in generations), generations


def test_readme_shows_these_commands():
    readme = README.read_text()
    for name, command in COMMANDS.items():
        assert command in readme, f"README lacks the {name} command: {command}"
