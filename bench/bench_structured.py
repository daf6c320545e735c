"""Structured action decoding benchmarks, measured side by side in one run.

Three parts (run one, or all with `all`):

  libs  The ReACT action grammar in four structured-generation libraries: tokenizer
        preparation, grammar compilation, time to compute one token mask (teacher-forcing
        canonical actions through SmolLM2's tokenizer), and whether each accepts every
        canonical action (fit). Writes bench/results/structured_libs.md.
  raw   Raw generations of the embedded model on real agent prompts (ReACT prompt + the
        agenda user's opener for a few train scenarios), constrained vs unconstrained, per
        backend (transformers, llama.cpp): share that parse, share that are exactly the
        grammar's text, seconds per generation. Writes bench/results/structured_raw.md.
  josh  N train scenarios (default 100), embedded model, agenda user, JOSH at beam 8, grounded
        action grammar vs free text, per backend: share of generations that parse, share of
        conversations that reach at least one goal, wall clock per conversation. Numbers are
        read back from each run's database (kept with --db-dir); Ctrl-C ends the current run
        and reports what finished. Writes bench/results/structured_josh.md.

Usage:
  python bench/bench_structured.py libs
  python bench/bench_structured.py raw [--scenarios 4] [--samples 8] [--backends hf,llamacpp]
  python bench/bench_structured.py josh [--limit 100] [--beam 8] [--max-turns 15] [--backends hf,llamacpp]
                                        [--db-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from josh_core.llm.base import OutputConstraint  # noqa: E402
from josh_core.llm.structured import (  # noqa: E402
    REACT_MAX_TOKENS,
    api_call_schema,
    check_react,
    format_react,
    gbnf_for,
    react_constraint,
)
from josh_core.envs import get_env  # noqa: E402

RESULTS = ROOT / "bench" / "results"


@functools.lru_cache(maxsize=1)
def toolwoz_tools() -> list[dict[str, Any]]:
    """ToolWOZ's tools schema, from the environment of its first train scenario."""
    toolwoz = get_env("toolwoz")
    return toolwoz.make_env(toolwoz.load_split("train", 1)[0]).tools()


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def tokenizer():
    from transformers import AutoTokenizer

    from josh_core.llm.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


# =============================================================================================
# libs
# =============================================================================================


def canonical_actions() -> list[str]:
    """Each API with all its parameters and with one, plus SPEAKs: what the grammar emits."""
    texts = []
    values = ["cheap", "the river bar steakhouse and grill", "king's college", "19:45", "2", "monday"]
    for tool in toolwoz_tools():
        fn = tool["function"]
        props = fn["parameters"]["properties"]
        full = {k: (p["enum"][i % len(p["enum"])] if "enum" in p else values[i % len(values)])
                for i, (k, p) in enumerate(props.items())}
        texts.append(format_react(f"I will use {fn['name']} with what the customer told me.",
                                  call={"name": fn["name"], "parameters": full}))
        first = next(iter(full.items()))
        texts.append(format_react("Search first.", call={"name": fn["name"], "parameters": dict([first])}))
    texts += [
        format_react("Greet the customer and ask what they need.", speak="Hello! How can I help you today?"),
        format_react("I need the number of people.", speak="Sure, for how many people should I book the table?"),
        format_react("Nothing matched.", speak="I am sorry, there is no such train on sunday. Would monday work?"),
    ]
    return texts


class LibRunner:
    """Teacher-forces token sequences through one library; times each mask computation."""

    name = ""
    grammar_form = ""
    max_texts: int | None = None

    def prepare(self, tok: Any, constraint: OutputConstraint) -> None: ...

    def new(self) -> Any: ...

    def mask_allows(self, state: Any, token: int) -> bool: ...

    def advance(self, state: Any, token: int) -> None: ...

    def accepts_eos(self, state: Any) -> bool: ...


class LLGuidanceRunner(LibRunner):
    def __init__(self, form: str):
        self.name = "llguidance"
        self.grammar_form = "Lark + %json schema" if form == "lark" else "GBNF twin"
        self.form = form

    def prepare(self, tok, constraint):
        import numpy as np

        from josh_core.llm.structured import lltokenizer_for, new_matcher

        self.np = np
        t = time.perf_counter()
        self.lltok = lltokenizer_for(tok)
        self.tokenizer_s = time.perf_counter() - t
        if self.form == "gbnf":
            constraint = OutputConstraint(kind="gbnf", grammar=gbnf_for(constraint))
        self.constraint = constraint
        t = time.perf_counter()
        self._new = lambda: new_matcher(self.lltok, self.constraint)
        self._new()
        self.compile_s = time.perf_counter() - t
        self.mask = np.zeros(((self.lltok.vocab_size + 31) // 32,), dtype=np.int32)

    def new(self):
        return self._new()

    def compute(self, m):
        m.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)

    def mask_allows(self, m, token):
        return bool((self.mask[token // 32] >> (token % 32)) & 1)

    def advance(self, m, token):
        m.consume_token(token)

    def accepts_eos(self, m):
        self.compute(m)
        return self.mask_allows(m, self.lltok.eos_token)


class XGrammarRunner(LibRunner):
    name = "xgrammar"
    grammar_form = "GBNF twin (EBNF)"

    def prepare(self, tok, constraint):
        import xgrammar as xgr

        self.xgr = xgr
        t = time.perf_counter()
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
        self.tokenizer_s = time.perf_counter() - t
        t = time.perf_counter()
        compiler = xgr.GrammarCompiler(info, max_threads=1)
        self.compiled = compiler.compile_grammar(gbnf_for(constraint))
        self.compile_s = time.perf_counter() - t
        self.mask = xgr.allocate_token_bitmask(1, info.vocab_size)
        self.eos = tok.eos_token_id

    def new(self):
        return self.xgr.GrammarMatcher(self.compiled)

    def compute(self, m):
        m.fill_next_token_bitmask(self.mask)

    def mask_allows(self, m, token):
        return bool((int(self.mask[0, token // 32]) >> (token % 32)) & 1)

    def advance(self, m, token):
        m.accept_token(token)

    def accepts_eos(self, m):
        self.compute(m)
        return self.mask_allows(m, self.eos)


class AllowedSetRunner(LibRunner):
    """A library that answers with the set of allowed token ids (`compute` fills self.allowed)."""

    allowed: set[int] = set()
    eos: int = 0

    def mask_allows(self, state, token):
        return token in self.allowed

    def accepts_eos(self, state):
        self.compute(state)
        return self.eos in self.allowed


class LMFormatEnforcerRunner(AllowedSetRunner):
    name = "lm-format-enforcer"
    max_texts = 4  # a Python trie walk per token: the whole corpus takes most of an hour
    grammar_form = "regex + JSON-schema parsers in sequence (flexible JSON whitespace)"

    def prepare(self, tok, constraint):
        from lmformatenforcer import (
            JsonSchemaParser,
            RegexParser,
            SequenceParser,
            StringParser,
            TokenEnforcer,
            TokenEnforcerTokenizerData,
            UnionParser,
        )

        # Its transformers integration does not import under transformers 5 (it imports the
        # removed `transformers.tokenization_utils`); this is the same preparation, inline.
        t = time.perf_counter()
        zero = tok.encode("0", add_special_tokens=False)[-1]
        special = set(tok.all_special_ids)
        regular = []
        for i in range(len(tok)):
            if i in special:
                continue
            after_zero = tok.decode([zero, i])[1:]
            regular.append((i, after_zero, len(after_zero) > len(tok.decode([i]))))
        data = TokenEnforcerTokenizerData(regular, lambda ids: tok.decode(ids).rstrip("\ufffd"),
                                          tok.eos_token_id, False, len(tok))
        self.tokenizer_s = time.perf_counter() - t
        t = time.perf_counter()
        line = r"[^\x00-\x1f<]+ "
        schema = {k: v for k, v in api_call_schema(toolwoz_tools()).items() if k != "x-guidance"}
        parser = SequenceParser([
            StringParser("PLAN "), RegexParser(line), StringParser("<COMMAND_END>\n"),
            UnionParser([
                SequenceParser([StringParser("APICALL "), JsonSchemaParser(schema), StringParser(" <COMMAND_END>")]),
                SequenceParser([StringParser("SPEAK "), RegexParser(line), StringParser("<COMMAND_END>")]),
            ]),
        ])
        self.enforcer = TokenEnforcer(data, parser)
        self.compile_s = time.perf_counter() - t
        self.eos = tok.eos_token_id

    def new(self):
        return []

    def compute(self, seq):
        self.allowed = set(self.enforcer.get_allowed_tokens(list(seq)).allowed_tokens)

    def advance(self, seq, token):
        seq.append(token)



class OutlinesCoreRunner(AllowedSetRunner):
    name = "outlines-core"
    grammar_form = "one regex (JSON part from build_regex_from_schema, optional spaces, no string caps)"

    def prepare(self, tok, constraint):
        import numpy as np
        import outlines_core as oc
        from outlines_core.json_schema import build_regex_from_schema

        from josh_core.llm.structured import lltokenizer_for

        t = time.perf_counter()
        lltok = lltokenizer_for(tok)
        vocab: dict[bytes, list[int]] = {}
        for i in range(lltok.vocab_size):
            if i == tok.eos_token_id or lltok.is_special_token(i):
                continue
            vocab.setdefault(lltok.decode_bytes([i]), []).append(i)
        self.vocabulary = oc.Vocabulary(tok.eos_token_id, vocab)
        self.tokenizer_s = time.perf_counter() - t
        # With the grammar's maxLength caps the DFA exceeds outlines-core's 2^31-state limit.
        schema = json.loads(json.dumps(api_call_schema(toolwoz_tools())).replace('"maxLength": 48', '"minLength": 0'))
        schema.pop("x-guidance")
        line = r"[^\x00-\x1f< ]([^\x00-\x1f<]*[^\x00-\x1f< ])? "
        regex = (f"PLAN {line}<COMMAND_END>\\n(APICALL {build_regex_from_schema(json.dumps(schema), '[ ]?')} "
                 f"<COMMAND_END>|SPEAK {line}<COMMAND_END>)")
        t = time.perf_counter()
        self.index = oc.Index(regex, self.vocabulary)
        self.compile_s = time.perf_counter() - t
        self.np = np
        self.mask = np.zeros(((lltok.vocab_size + 31) // 32,), dtype=np.int32)
        self.eos = tok.eos_token_id

    def new(self):
        import outlines_core as oc

        return oc.Guide(self.index)

    def compute(self, guide):
        self.allowed = set(guide.get_tokens())

    def advance(self, guide, token):
        guide.advance(token)



def run_libs(args: argparse.Namespace) -> str:
    tok = tokenizer()
    constraint = react_constraint(toolwoz_tools())
    texts = canonical_actions()
    sequences = [tok.encode(t, add_special_tokens=False) for t in texts]
    runners: list[LibRunner] = [LLGuidanceRunner("lark"), LLGuidanceRunner("gbnf"), XGrammarRunner(),
                                LMFormatEnforcerRunner(), OutlinesCoreRunner()]
    rows = []
    for runner in runners:
        try:
            runner.prepare(tok, constraint)
        except ImportError as exc:
            rows.append(f"| {runner.name} | {runner.grammar_form} | not installed ({exc.name}) | | | | | |")
            print(rows[-1], flush=True)
            continue
        except Exception as exc:  # a library that cannot take the grammar is a result too
            rows.append(f"| {runner.name} | {runner.grammar_form} | failed: {type(exc).__name__}: {str(exc)[:120]} | | | | | |")
            print(rows[-1], flush=True)
            continue
        times, accepted = [], 0
        used = sequences[: runner.max_texts] if runner.max_texts else sequences
        for seq in used:
            state = runner.new()
            ok = True
            for token in seq:
                t = time.perf_counter()
                runner.compute(state)
                times.append(time.perf_counter() - t)
                if not runner.mask_allows(state, token):
                    ok = False
                    break
                runner.advance(state, token)
            accepted += ok and runner.accepts_eos(state)
        rows.append(
            f"| {runner.name} | {runner.grammar_form} | {runner.tokenizer_s:.2f} | {runner.compile_s * 1000:.1f} "
            f"| {statistics.mean(times) * 1e6:.0f} | {pct(times, 0.5) * 1e6:.0f} | {pct(times, 0.99) * 1e6:.0f} "
            f"| {accepted}/{len(used)} |"
        )
        print(rows[-1], flush=True)
    n_tokens = sum(len(s) for s in sequences)
    batch_table = processor_step_table(tok, constraint, sequences)
    table = "\n".join([
        "| library | grammar given as | tokenizer prep (s) | grammar compile (ms) | mask mean (µs/token) "
        "| mask p50 | mask p99 | canonical actions accepted |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    return (
        "# Structured decoding libraries on the ReACT action grammar\n\n"
        f"Machine: {machine()}. Tokenizer: SmolLM2-135M-Instruct (49,152 tokens). "
        f"{len(texts)} canonical actions ({n_tokens} tokens) teacher-forced; one mask per token, "
        "single row, one thread. Command: `python bench/bench_structured.py libs`.\n\n" + table + "\n\n"
        "## The transformers logits processor (llguidance), per generate step\n\n"
        "What `logits_processor_for` adds to each decoding step of a batch: feed each row its last "
        "token, compute every row's mask (LLExecutor, rows in parallel), and set the forbidden logits "
        "of a (rows x 49,152) float32 score matrix to -inf. Rows teacher-force the canonical actions.\n\n"
        + batch_table + "\n"
    )


def processor_step_table(tok: Any, constraint: OutputConstraint, sequences: list[list[int]]) -> str:
    import torch

    from josh_core.llm.structured import logits_processor_for

    eos = tok.eos_token_id
    lines = ["| rows | steps | ms / step (mean) | ms / step (p50) | µs / row / step |", "|---|---|---|---|---|"]
    for rows in (1, 8, 16):
        seqs = [sequences[i % len(sequences)] + [eos] for i in range(rows)]
        steps = max(len(s) for s in seqs)
        processor = logits_processor_for(tok, constraint, batch_size=rows, eos_token_ids=[eos])
        ids = torch.full((rows, 4), 5, dtype=torch.long)
        times = []
        for t in range(steps):
            scores = torch.zeros(rows, len(tok))
            start = time.perf_counter()
            processor(ids, scores)
            times.append(time.perf_counter() - start)
            nxt = torch.tensor([[s[t] if t < len(s) else eos] for s in seqs])
            ids = torch.cat([ids, nxt], dim=1)
        lines.append(f"| {rows} | {steps} | {statistics.mean(times) * 1e3:.2f} | {pct(times, 0.5) * 1e3:.2f} "
                     f"| {statistics.mean(times) / rows * 1e6:.0f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


# =============================================================================================
# raw generations on agent prompts
# =============================================================================================


async def agent_prompts(n_scenarios: int) -> list[tuple[str, list[Any], list[dict[str, Any]]]]:
    """(scenario id, prompt messages, tools) for the first train scenarios: the ReACT agent's
    prompt followed by the agenda user's opening utterance."""
    from josh_core.policies.agenda_user import AgendaUser
    from josh_core.policies.base import TurnContext
    from josh_core.policies.react_agent import ReactAgent
    from josh_core.types import Message

    class _NoBackend:
        name, is_local = "none", True

    agent = ReactAgent(_NoBackend())
    user = AgendaUser()
    out = []
    toolwoz = get_env("toolwoz")
    for scenario in toolwoz.load_split("train", limit=n_scenarios):
        env = toolwoz.make_env(scenario)
        opener = await user.reply(TurnContext(history=[], env=env, scenario=scenario))
        messages = agent.prompt_messages(env) + [Message(role="user", content=opener.text)]
        out.append((scenario.id, messages, env.tools()))
    return out


def build_backend(kind: str) -> Any:
    """The embedded model on one backend, built from its SPEC as the CLI does (so with the
    embedded model's default sampling)."""
    from josh_core.llm.specs import build_backend as from_spec

    spec = {"hf": "embedded", "llamacpp": "llamacpp:embedded"}[kind]
    backend = from_spec(spec, shared=False)
    if hasattr(backend, "load"):
        backend.load()
    return backend


async def raw_generations(backend: Any, prompts, samples: int, constrained: bool, seed: int):
    from josh_core.llm.base import EMBEDDED_MODEL_SAMPLING, ChatRequest
    from josh_core.policies.parse import parse_react
    from josh_core.policies.react_agent import REACT_STOP, UNCONSTRAINED_MAX_TOKENS

    requests = []
    for i, (_, messages, tools) in enumerate(prompts):
        sampling = EMBEDDED_MODEL_SAMPLING.model_copy(update={
            "seed": seed + i,
            "max_tokens": REACT_MAX_TOKENS if constrained else UNCONSTRAINED_MAX_TOKENS,
            "stop": REACT_STOP,
        })
        requests.append(ChatRequest(messages=messages, sampling=sampling, n=samples,
                                    constraint=react_constraint(tools) if constrained else None))
    start = time.perf_counter()
    responses = await asyncio.gather(*(backend.chat(r) for r in requests))
    seconds = time.perf_counter() - start
    texts = [c.text for r in responses for c in r.choices]
    tokens = sum(r.completion_tokens or 0 for r in responses)
    parsed = [parse_react(t).kind != "format_error" for t in texts]
    calls = [parse_react(t).kind == "apicall" and parse_react(t).call is not None for t in texts]
    exact = [check_react(t, prompts[0][2]).canonical for t in texts]  # False: a line hit its token cap
    return {
        "n": len(texts), "parse": sum(parsed) / len(texts), "call": sum(calls) / len(texts),
        "exact": sum(exact) / len(texts), "seconds": seconds, "tokens": tokens, "examples": texts[:3],
    }


def run_raw(args: argparse.Namespace) -> str:
    prompts = asyncio.run(agent_prompts(args.scenarios))
    lines = [
        "| backend | decoding | generations | parse (agent parser) | readable APICALL | exact layout "
        "| s / generation | tokens / s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    examples = []
    for kind in args.backends.split(","):
        backend = build_backend(kind)
        for constrained in (False, True):
            r = asyncio.run(raw_generations(backend, prompts, args.samples, constrained, args.seed))
            label = "constrained" if constrained else "unconstrained"
            lines.append(
                f"| {kind} | {label} | {r['n']} | {r['parse']:.0%} | {r['call']:.0%} | {r['exact']:.0%} "
                f"| {r['seconds'] / r['n']:.2f} | {r['tokens'] / r['seconds']:.0f} |"
            )
            print(lines[-1], flush=True)
            examples += [f"- {kind}, {label}: `{t[:160]!r}`" for t in r["examples"][:2]]
    return (
        "# Raw ReACT generations of the embedded model, constrained vs unconstrained\n\n"
        f"Machine: {machine()}. Prompts: the ReACT agent's prompt + the agenda user's opener for the "
        f"first {len(prompts)} train scenarios; {args.samples} samples each, the embedded model's "
        "default sampling (temperature 0.7, top_k 50, top_p 0.75). Requests are sent together, as the engine does. "
        f"Command: `python bench/bench_structured.py raw --scenarios {args.scenarios} --samples {args.samples} "
        f"--backends {args.backends}`.\n\n" + "\n".join(lines) + "\n\nExamples:\n\n" + "\n".join(examples) + "\n"
    )


# =============================================================================================
# JOSH conversations
# =============================================================================================


def josh_row(db_path: Path, run_id: str | None = None) -> dict[str, Any]:
    """The bench's numbers for one stored JOSH run, read back from its database. Generation
    shares count every stored agent generation, including those of a conversation an interrupt
    left unfinished (the parser's verdict is stored with each one; the exact-layout check reruns
    on its text); conversation shares and times count finished conversations."""
    from josh_core.storage import reads
    from josh_core.storage.db import Database

    db = Database(db_path)
    stored = [c for c in reads.list_conversations(db, run_id=run_id) if c.status in ("done", "running")]
    finished = [c for c in stored if c.status == "done"]
    trees = reads.load_trees(db, [c.id for c in stored]) if stored else {}
    generations = parsed = exact = 0
    for tree in trees.values():
        for node in tree.agent_nodes():
            for g in node.generations:
                generations += 1
                parsed += g.action != "format_error"
                exact += check_react(g.text, toolwoz_tools()).canonical
    n = len(finished)
    return {
        "conversations": n, "unfinished": len(stored) - n, "generations": generations,
        "parse": parsed / max(1, generations), "exact": exact / max(1, generations),
        "reached": sum((c.reward or 0) > 0 for c in finished) / n if n else None,
        "reward": sum(c.reward or 0 for c in finished) / n if n else None,
        "seconds": sum(c.seconds or 0 for c in finished) / n if n else None,
    }


JOSH_HEADER = [
    "| backend | decoding | conversations | generations | parse | exact layout "
    "| ≥1 goal reached | mean reward | s / conversation |",
    "|---|---|---|---|---|---|---|---|---|",
]


def josh_line(kind: str, decoding: str, row: dict[str, Any], note: str = "") -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    unfinished = f" (+{row['unfinished']} unfinished)" if row["unfinished"] else ""
    return (f"| {kind} | {decoding}{note} | {row['conversations']}{unfinished} | {row['generations']} "
            f"| {row['parse']:.1%} | {row['exact']:.1%} | {fmt(row['reached'], '.0%')} | {fmt(row['reward'], '.3f')} "
            f"| {fmt(row['seconds'], '.1f')} |")


def run_josh(args: argparse.Namespace) -> str:
    """JOSH runs, grounded grammar then free text, per backend. Each run's database is kept in
    --db-dir; Ctrl-C ends the current run and reports its finished conversations."""
    from josh_core.llm.specs import clear_shared_backends
    from josh_core.policies.agents import build_model_agent
    from josh_core.policies.factory import AgentOptions, build_user
    from josh_core.rollout import RolloutConfig, start_run

    scenarios = get_env("toolwoz").load_split("train", limit=args.limit)
    db_dir = args.db_dir or Path(tempfile.mkdtemp(prefix="bench-structured-"))
    db_dir.mkdir(parents=True, exist_ok=True)
    lines = list(JOSH_HEADER)
    stop = False
    for kind in args.backends.split(","):
        backend = build_backend(kind)
        for decoding, constrained in (("grounded", True), ("free", False)):
            if stop:
                break
            options = AgentOptions(constrained=constrained)
            agent = build_model_agent(backend, options)
            config = RolloutConfig(josh=True, agent="embedded" if kind == "hf" else "llamacpp:embedded",
                                   user="agenda", beam=args.beam, branching=2, max_turns=args.max_turns,
                                   constrained=constrained, grounded=constrained, seed=args.seed,
                                   split="train", limit=args.limit)
            db_path = db_dir / f"{kind}-{decoding}.duckdb"
            db_path.unlink(missing_ok=True)
            note = ""
            try:
                start_run(db_path, scenarios, config, agent=agent, user=build_user("agenda"))
            except KeyboardInterrupt:
                stop, note = True, " (interrupted)"
            row = josh_row(db_path)
            lines.append(josh_line(kind, decoding, row, note))
            print(lines[-1], f"[{db_path}]", flush=True)
        clear_shared_backends()
    return josh_report(args, lines, len(scenarios))


def josh_report(args: argparse.Namespace, lines: list[str], n_scenarios: int) -> str:
    return (
        "# JOSH with the embedded model: grounded action grammar vs free text\n\n"
        f"Machine: {machine()}. {n_scenarios} train scenarios, agenda user, JOSH beam {args.beam}, "
        f"branching 2, at most {args.max_turns} agent turns, the embedded model's default sampling "
        "(temperature 0.7, top_k 50, top_p 0.75), at most 5 generations per agent turn. "
        "grounded: the ReACT action grammar with values from the conversation (`--decoding grounded`, "
        "the default for local models); free: unconstrained text. "
        "parse: share of agent generations the ReACT parser reads as an APICALL or SPEAK; "
        "exact layout: share written exactly in the grammar's layout (a line cut at its token cap "
        "loses the space before <COMMAND_END>); "
        "≥1 goal reached: share of finished conversations whose tree reached at least one goal. "
        "After an interrupt, generation shares also count the unfinished conversation's generations; "
        "conversation columns count finished conversations only. "
        f"Command: `python bench/bench_structured.py josh --limit {args.limit} --beam {args.beam} "
        f"--max-turns {args.max_turns} --backends {args.backends}`.\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["libs", "raw", "josh", "all"])
    parser.add_argument("--scenarios", type=int, default=4, help="raw: number of train scenarios")
    parser.add_argument("--samples", type=int, default=8, help="raw: samples per prompt")
    parser.add_argument("--limit", type=int, default=100, help="josh: number of train scenarios")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=15)
    parser.add_argument("--backends", default="hf,llamacpp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results file (one part only)")
    parser.add_argument("--db-dir", type=Path, default=None,
                        help="josh: keep each run's DuckDB here (default: a new temporary folder)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = ["libs", "raw", "josh"] if args.part == "all" else [args.part]
    for part in parts:
        report = {"libs": run_libs, "raw": run_raw, "josh": run_josh}[part](args)
        out = args.out or RESULTS / f"structured_{part}.md"
        out.write_text(report)
        print(report)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
