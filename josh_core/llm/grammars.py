"""The action grammars: the Lark grammar llguidance enforces in process (`react_constraint`,
`fc_constraint`), and its GBNF twin for llama.cpp, its server and vLLM's xgrammar (`gbnf_for`),
both built from the action format of `actions.py` and one tool list."""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Sequence

from josh_core.llm.actions import (
    _LINE_CHAR,
    _LINE_EDGE,
    _LINE_LEXEME,
    _VALUE_CHAR,
    APICALL_PREFIX,
    COMMAND_END,
    COMMAND_SEPARATOR,
    PLAN_MAX_CHARS,
    PLAN_MAX_TOKENS,
    PLAN_PREFIX,
    SPEAK_MAX_CHARS,
    SPEAK_MAX_TOKENS,
    SPEAK_PREFIX,
    VALUE_MAX_CHARS,
    api_call_schema,
    fc_schema,
)
from josh_core.llm.base import ConstraintUnsupported, OutputConstraint


# --------------------------------------------------------------------------------------------
# Constraints (Lark for llguidance) and their GBNF twins
# --------------------------------------------------------------------------------------------

# Lark grammar text -> (tools key, actions) it was built from, so `gbnf_for` can build its GBNF
# twin when a backend asks for one. Built lazily: with grounded values every generation has a
# new grammar, and the llguidance backends never need the twin. Bounded, newest kept.
_TWIN_SOURCES: OrderedDict[str, tuple[str, tuple[str, ...]]] = OrderedDict()
_TWIN_SOURCES_MAX = 256
_TWINS_LOCK = threading.Lock()


def _tools_key(tools: Sequence[dict[str, Any]]) -> str:
    # Not sort_keys: the order of parameters is the order the grammar writes them in.
    return json.dumps(list(tools))


ACTIONS = ("apicall", "speak")


def _check_actions(actions: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(a for a in ACTIONS if a in actions)
    if not chosen or len(chosen) != len(set(actions)):
        raise ValueError(f"actions must be a non-empty subset of {ACTIONS}, got {actions!r}")
    return chosen


def react_lark(tools: Sequence[dict[str, Any]], actions: Sequence[str] = ACTIONS, *,
               plan: bool = True, speak_max_tokens: int = SPEAK_MAX_TOKENS) -> str:
    """The llguidance Lark grammar of one ReACT generation (`plan=False`: the action alone,
    as the compact agent style writes it)."""
    return _react_lark_cached(_tools_key(tools), _check_actions(actions), plan, speak_max_tokens)


@lru_cache(maxsize=64)
def _react_lark_cached(key: str, actions: tuple[str, ...], plan: bool = True,
                       speak_max_tokens: int = SPEAK_MAX_TOKENS) -> str:
    tools = json.loads(key)
    branches = []
    if "apicall" in actions:
        branches.append(f'"{APICALL_PREFIX}" call " {COMMAND_END}"')
    if "speak" in actions:
        branches.append(f'"{SPEAK_PREFIX}" speak "{COMMAND_END}"')
    if plan:
        lines = [
            "// One ReACT generation: a PLAN line, then one APICALL or SPEAK (josh_core/llm/grammars.py)",
            f'start: "{PLAN_PREFIX}" plan "{COMMAND_END}\\n" action',
            f"action: {' | '.join(branches)}",
            f"plan[max_tokens={PLAN_MAX_TOKENS}]: /{_LINE_LEXEME}/",
        ]
    else:
        lines = [
            "// One compact generation: one APICALL or SPEAK, no PLAN (josh_core/llm/grammars.py)",
            "start: action",
            f"action: {' | '.join(branches)}",
        ]
    if "speak" in actions:
        lines.append(f"speak[max_tokens={speak_max_tokens}]: /{_LINE_LEXEME}/")
    if "apicall" in actions:
        lines.append(f"call: %json {json.dumps(api_call_schema(tools))}")
    return "\n".join(lines + [""])


def react_constraint(tools: Sequence[dict[str, Any]], actions: Sequence[str] = ACTIONS, *,
                     plan: bool = True, speak_max_tokens: int = SPEAK_MAX_TOKENS) -> OutputConstraint:
    """The ReACT action grammar for one generation over these tools (see module docstring).

    `actions` narrows the second command: ("apicall",) forces a call, ("speak",) a message.
    `plan=False` drops the PLAN line (the compact agent style); `speak_max_tokens` caps SPEAK.
    """
    chosen = _check_actions(actions)
    key = _tools_key(tools)
    grammar = _react_lark_cached(key, chosen, plan, speak_max_tokens)
    with _TWINS_LOCK:
        _TWIN_SOURCES[grammar] = (key, chosen, plan, speak_max_tokens)
        _TWIN_SOURCES.move_to_end(grammar)
        while len(_TWIN_SOURCES) > _TWIN_SOURCES_MAX:
            _TWIN_SOURCES.popitem(last=False)
    return OutputConstraint(kind="lark", grammar=grammar)


def fc_constraint(tools: Sequence[dict[str, Any]]) -> OutputConstraint:
    """Function calling: ``{"tool_call": {"name", "arguments"}}`` or ``{"content": "..."}``."""
    return OutputConstraint(kind="json_schema", json_schema=fc_schema(tools))


# --- GBNF -----------------------------------------------------------------------------------


def _gbnf_literal(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


class _Gbnf:
    """Builds GBNF rules for the JSON-schema subset the action grammars use."""

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self._counter = 0

    def rule(self, body: str, hint: str = "r") -> str:
        self._counter += 1
        name = f"{re.sub(r'[^a-zA-Z0-9]+', '-', hint).strip('-') or 'r'}-{self._counter}"
        self.rules[name] = body
        return name

    def value(self, schema: dict[str, Any], hint: str) -> str:
        """A GBNF expression for one value of `schema` (compact JSON, no escapes)."""
        if "const" in schema:
            return _gbnf_literal(json.dumps(schema["const"], ensure_ascii=False))
        if "enum" in schema:
            return "(" + " | ".join(_gbnf_literal(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]) + ")"
        if "anyOf" in schema:
            alts = []
            for alt in schema["anyOf"]:
                name = ((alt.get("properties") or {}).get("name") or {}).get("const")
                alts.append(self.value(alt, str(name) if isinstance(name, str) else f"{hint}-alt"))
            return "(" + " | ".join(alts) + ")"
        kind = schema.get("type")
        if kind == "string":
            cap = int(schema.get("maxLength", VALUE_MAX_CHARS))
            return f'"\\"" {_VALUE_CHAR}{{0,{cap}}} "\\""'
        if kind == "integer":
            return '("-"? ("0" | [1-9] [0-9]{0,15}))'
        if kind == "number":
            return '("-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,15})?)'
        if kind == "boolean":
            return '("true" | "false")'
        if kind == "object":
            return self.object(schema, hint)
        raise ConstraintUnsupported(f"no GBNF for the JSON schema {schema!r}")

    def object(self, schema: dict[str, Any], hint: str) -> str:
        """Keys in schema order, each optional unless required, joined by ", "."""
        props = list((schema.get("properties") or {}).items())
        required = set(schema.get("required") or [])
        pairs = [
            self.rule(f"{_gbnf_literal(json.dumps(key) + ': ')} {self.value(sub, f'{hint}-{key}')}", f"{hint}-{key}")
            for key, sub in props
        ]
        # tail(i, first): the members from key i on (`first`: none written yet); None if empty.
        tails: dict[tuple[int, bool], str | None] = {}

        def tail(i: int, first: bool) -> str | None:
            if i == len(props):
                return None
            if (i, first) not in tails:
                rest = tail(i + 1, False)
                take = " ".join(p for p in ('' if first else '", "', pairs[i], rest or "") if p)
                if props[i][0] in required:
                    body = take
                else:
                    skip = tail(i + 1, first)
                    body = f"{take} | {skip}" if skip else f"({take})?"
                tails[(i, first)] = self.rule(body, f"{hint}-from-{props[i][0]}")
            return tails[(i, first)]

        inner = tail(0, True)
        return f'"{{" {inner} "}}"' if inner else '"{}"'

    def render(self, root: str) -> str:
        return "\n".join([f"root ::= {root}"] + [f"{name} ::= {body}" for name, body in self.rules.items()]) + "\n"


def _gbnf_line(max_chars: int) -> str:
    return f'{_LINE_EDGE} ({_LINE_CHAR}{{0,{max_chars - 2}}} {_LINE_EDGE})? " "'


def react_gbnf(tools: Sequence[dict[str, Any]], actions: Sequence[str] = ACTIONS, *,
               plan: bool = True, speak_max_tokens: int = SPEAK_MAX_TOKENS) -> str:
    """The ReACT action grammar in GBNF (llama.cpp, xgrammar): same text as `react_lark`.

    Lines are capped in characters (PLAN_MAX_CHARS, SPEAK_MAX_CHARS) where the Lark grammar
    caps tokens: llama.cpp's grammar sampler cannot count tokens.
    """
    g = _Gbnf()
    actions = _check_actions(actions)
    with_plan = plan
    speak_chars = max(16, SPEAK_MAX_CHARS * speak_max_tokens // SPEAK_MAX_TOKENS)
    plan = g.rule(_gbnf_line(PLAN_MAX_CHARS), "plan") if with_plan else None
    branches = []
    if "apicall" in actions:
        call = g.value(api_call_schema(tools), "call")
        branches.append(f"{_gbnf_literal(APICALL_PREFIX)} {call} {_gbnf_literal(' ' + COMMAND_END)}")
    if "speak" in actions:
        speak = g.rule(_gbnf_line(speak_chars), "speak")
        branches.append(f"{_gbnf_literal(SPEAK_PREFIX)} {speak} {_gbnf_literal(COMMAND_END)}")
    action = g.rule(" | ".join(branches), "action")
    if not with_plan:
        return g.render(action)
    root = f"{_gbnf_literal(PLAN_PREFIX)} {plan} {_gbnf_literal(COMMAND_END + COMMAND_SEPARATOR)} {action}"
    return g.render(root)


@lru_cache(maxsize=64)
def _react_gbnf_cached(key: str, actions: tuple[str, ...], plan: bool = True,
                       speak_max_tokens: int = SPEAK_MAX_TOKENS) -> str:
    return react_gbnf(json.loads(key), actions, plan=plan, speak_max_tokens=speak_max_tokens)


def json_schema_gbnf(schema: dict[str, Any]) -> str:
    """GBNF for the JSON-schema subset used here (objects in key order, strings, enums)."""
    g = _Gbnf()
    return g.render(g.value(schema, "value"))


def gbnf_for(constraint: OutputConstraint) -> str:
    """The GBNF twin of a constraint; raises ConstraintUnsupported when there is none."""
    if constraint.kind == "json_schema" and constraint.json_schema is not None:
        return json_schema_gbnf(constraint.json_schema)
    if constraint.kind == "lark" and constraint.grammar is not None:
        with _TWINS_LOCK:
            source = _TWIN_SOURCES.get(constraint.grammar)
        if source is not None:
            return _react_gbnf_cached(*source)
        raise ConstraintUnsupported("this Lark grammar was not built by react_constraint() (or is long "
                                    "forgotten); no GBNF twin")
    if constraint.kind == "gbnf" and constraint.grammar is not None:
        return constraint.grammar
    raise ConstraintUnsupported(f"unknown constraint kind {constraint.kind!r}")


def plain_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema without llguidance's private options (servers other than llguidance reject
    unknown keys)."""
    return {k: v for k, v in schema.items() if k != "x-guidance"}
