"""Structured action decoding: the agents' output grammars and how each backend enforces them.

One place defines the exact text of an agent action and builds every form of its grammar from
the same tool list:

- `react_constraint(tools)`: a llguidance Lark grammar (the API call embedded as `%json`) for
  one ReACT generation. Its text, byte for byte::

      PLAN <plan> <COMMAND_END>
      APICALL {"name": "<api>", "parameters": {"<key>": "<value>", ...}} <COMMAND_END>

  or, instead of the APICALL line, ``SPEAK <utterance> <COMMAND_END>``. One newline separates
  the two commands; nothing follows the last ``<COMMAND_END>``. `format_react` renders it.
- `fc_constraint(tools)`: a JSON schema for function calling, either
  ``{"tool_call": {"name": ..., "arguments": {...}}}`` or ``{"content": "..."}``;
  `parse_fc_output` turns such a text back into content and tool calls.
- `gbnf_for(constraint)`: the same language as a GBNF grammar (llama.cpp, its server, and
  vLLM's xgrammar backend).
- `logits_processor_for(tokenizer, constraints)`: a transformers logits processor that masks
  every row of a batch with its own llguidance matcher (rows may differ or be unconstrained).
- `plain_schema(schema)`: a schema for servers that reject llguidance's own keys. The request
  fields each backend sends live beside it: `openai_backend.constraint_for_openai`,
  `vllm_backend.vllm_sampling_kwargs`.
- `check_react` / `validate_react`: whether a text is a well-formed action for these tools.

Why llguidance: its Lark grammars embed JSON schemas, it keeps per-row state cheaply (a
matcher deep-copies in microseconds), and it computes a 49k-token mask in about 0.1 ms on one
CPU core. docs/structured-decoding.md compares it with xgrammar, outlines and
lm-format-enforcer.
"""

from __future__ import annotations

import json
import re
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Sequence

from josh_core.llm.base import ConstraintUnsupported, OutputConstraint
from josh_core.types import ToolCall

# --------------------------------------------------------------------------------------------
# The ReACT action text (one place; the ReACT parser must accept exactly this)
# --------------------------------------------------------------------------------------------

COMMAND_END = "<COMMAND_END>"
PLAN_PREFIX = "PLAN "
APICALL_PREFIX = "APICALL "
SPEAK_PREFIX = "SPEAK "
# Between the PLAN command and the action command.
COMMAND_SEPARATOR = "\n"

# Caps keep a constrained generation inside a small max_tokens budget: a weak model at
# temperature 1.5 would otherwise ramble until it is cut off, and a cut-off action never parses.
# llguidance caps lines in tokens: a counted character repetition ({0,240}) makes its masks
# inside the line ~40x slower, while a token cap costs nothing. A line that reaches its
# token cap is cut where it stands, so the one space before <COMMAND_END> may be missing then
# (parsers accept optional whitespace there). llama.cpp cannot count tokens, so the GBNF twin
# caps the same lines in characters (about the same length for ordinary text).
# PLAN gets room to finish its sentence: a plan cut at its cap is followed by a SPEAK far more
# often (measured with the embedded model on 8 train openers, 32 samples at temperature 0.7:
# APICALL in 6% of generations with a 40-token cap, 31% with 64, 47% with 96).
PLAN_MAX_TOKENS = 96
SPEAK_MAX_TOKENS = 96
PLAN_MAX_CHARS = 360
SPEAK_MAX_CHARS = 360
VALUE_MAX_CHARS = 48  # longest string value of an API parameter (longest ToolWOZ name: 36)
CONTENT_MAX_CHARS = 600  # longest function-calling text reply
# A budget that always fits a whole constrained ReACT action with the token caps above
# (llguidance: transformers and llama.cpp in this process).
REACT_MAX_TOKENS = 320
# The GBNF twin caps characters, and SmolLM2 writes digits one token each: at one character
# per token its longest action (PLAN + SPEAK, or PLAN + a call with every value at its cap)
# needs this many tokens. Servers that take the GBNF should be given this budget.
GBNF_REACT_MAX_TOKENS = 1024

# Characters of PLAN / SPEAK text: one line, no control characters, no "<" (so the command end
# is unambiguous); it starts and ends with a non-space, and one space precedes <COMMAND_END>.
_LINE_CHAR = r"[^\x00-\x1f\x7f<]"
_LINE_EDGE = r"[^\x00-\x1f\x7f< ]"
_LINE_RE = re.compile(rf"{_LINE_EDGE}(?:{_LINE_CHAR}*{_LINE_EDGE})?")
# One PLAN/SPEAK line plus the single space that precedes <COMMAND_END>. The space is part of
# the line so that a greedy lexer (llguidance) never has to give it back to the literal after.
_LINE_LEXEME = f"{_LINE_EDGE}({_LINE_CHAR}*{_LINE_EDGE})? "
# JSON string values are written without escapes (no quote, backslash or control character).
_VALUE_CHAR = r'[^"\\\x00-\x1f\x7f]'
_VALUE_RE = re.compile(f"{_VALUE_CHAR}*")

# JSON layout of calls: json.dumps' default separators, the same ones the paper's examples use.
_JSON_OPTIONS = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "json_allowed_escapes": "",
}


def format_react(plan: str, *, call: dict[str, Any] | None = None, speak: str | None = None) -> str:
    """The canonical text of one ReACT generation (what the constrained grammar produces).

    `call` is ``{"name": ..., "parameters": {...}}``; give exactly one of `call` and `speak`.
    """
    if (call is None) == (speak is None):
        raise ValueError("give exactly one of call and speak")
    if call is not None:
        action = APICALL_PREFIX + json.dumps(call, ensure_ascii=False)
    else:
        action = SPEAK_PREFIX + str(speak)
    return f"{PLAN_PREFIX}{plan} {COMMAND_END}{COMMAND_SEPARATOR}{action} {COMMAND_END}"


# --------------------------------------------------------------------------------------------
# Tool schemas
# --------------------------------------------------------------------------------------------


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    """The function part of an OpenAI tool dict (also accepts the flat form)."""
    fn = tool.get("function", tool)
    if "name" not in fn:
        raise ValueError(f"tool without a name: {tool!r}")
    return fn


def tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    return [_function(t)["name"] for t in tools]


def _value_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """The schema one parameter value must match when constrained (strings are capped)."""
    if "enum" in prop:
        return {"enum": list(prop["enum"])}
    if "const" in prop:
        return {"const": prop["const"]}
    kind = prop.get("type", "string")
    if kind == "string":
        return {"type": "string", "maxLength": min(int(prop.get("maxLength", VALUE_MAX_CHARS)), VALUE_MAX_CHARS)}
    if kind in ("integer", "number", "boolean"):
        return {"type": kind}
    # Lists, nested objects: llguidance takes them as they are (the GBNF twin does not).
    return {k: v for k, v in prop.items() if k not in ("description", "title")}


def parameters_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """The schema of one tool's parameters object: its keys only, in order, enums kept."""
    params = _function(tool).get("parameters") or {}
    props = params.get("properties") or {}
    return {
        "type": "object",
        "properties": {key: _value_schema(prop) for key, prop in props.items()},
        "required": [key for key in params.get("required", []) if key in props],
        "additionalProperties": False,
    }


def _call_object_schema(tool: dict[str, Any], args_key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": _function(tool)["name"]},
            args_key: parameters_schema(tool),
        },
        "required": ["name", args_key],
        "additionalProperties": False,
    }


def api_call_schema(tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of a ReACT APICALL body: ``{"name": one API, "parameters": its keys}``."""
    if not tools:
        raise ValueError("no tools: an APICALL grammar needs at least one API")
    return {"anyOf": [_call_object_schema(t, "parameters") for t in tools], "x-guidance": _JSON_OPTIONS}


def fc_schema(tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of a function-calling turn: one tool call or a text reply."""
    branches: list[dict[str, Any]] = []
    if tools:
        branches.append(
            {
                "type": "object",
                "properties": {"tool_call": {"anyOf": [_call_object_schema(t, "arguments") for t in tools]}},
                "required": ["tool_call"],
                "additionalProperties": False,
            }
        )
    branches.append(
        {
            "type": "object",
            "properties": {"content": {"type": "string", "maxLength": CONTENT_MAX_CHARS}},
            "required": ["content"],
            "additionalProperties": False,
        }
    )
    return {"anyOf": branches, "x-guidance": _JSON_OPTIONS}


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
            "// One ReACT generation: a PLAN line, then one APICALL or SPEAK (josh_core/llm/structured.py)",
            f'start: "{PLAN_PREFIX}" plan "{COMMAND_END}\\n" action',
            f"action: {' | '.join(branches)}",
            f"plan[max_tokens={PLAN_MAX_TOKENS}]: /{_LINE_LEXEME}/",
        ]
    else:
        lines = [
            "// One compact generation: one APICALL or SPEAK, no PLAN (josh_core/llm/structured.py)",
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


def parse_fc_output(text: str) -> tuple[str, list[ToolCall]]:
    """(content, tool calls) of a text that `fc_constraint` produced; raises ValueError else."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if "tool_call" in obj:
        call = obj["tool_call"]
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ValueError("tool_call without a name")
        args = call.get("arguments", {})
        if not isinstance(args, dict):
            raise ValueError("tool_call arguments are not an object")
        return "", [ToolCall(name=call["name"], parameters=args)]
    if isinstance(obj.get("content"), str):
        return obj["content"], []
    raise ValueError('expected {"tool_call": {...}} or {"content": "..."}')


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


# --------------------------------------------------------------------------------------------
# Checking texts (tests, bench, format-error metrics)
# --------------------------------------------------------------------------------------------

_REACT_RE = re.compile(
    r"^\s*PLAN\s(?P<plan>.*?)\s*<COMMAND_END>\s*(?P<cmd>APICALL|SPEAK)\s(?P<body>.*?)\s*<COMMAND_END>\s*$",
    re.DOTALL,
)


@dataclass
class ReactCheck:
    ok: bool
    action: str | None = None  # "apicall" | "speak"
    plan: str | None = None
    call: dict[str, Any] | None = None  # {"name", "parameters"} when action == "apicall"
    speak: str | None = None
    error: str | None = None
    # Exactly the grammar's layout (single spaces, one newline, JSON layout and key order, value
    # characters), line lengths aside. False for a constrained line cut at its token cap.
    canonical: bool = False


def _value_error(key: str, value: Any, schema: dict[str, Any]) -> str | None:
    if "enum" in schema:
        return None if value in schema["enum"] else f"{key}={value!r} is not one of {schema['enum']}"
    kind = schema.get("type", "string")
    expected = {"string": str, "integer": int, "number": (int, float), "boolean": bool}.get(kind)
    if expected and (not isinstance(value, expected) or (kind != "boolean" and isinstance(value, bool))):
        return f"{key}={value!r} is not a {kind}"
    return None


def check_call(call: Any, tools: Sequence[dict[str, Any]]) -> str | None:
    """Why `call` is not a valid ``{"name", "parameters"}`` call of one of `tools` (None: valid)."""
    if not isinstance(call, dict):
        return "the APICALL body is not a JSON object"
    if set(call) != {"name", "parameters"}:
        return f"the APICALL object must have exactly the keys name and parameters, got {sorted(call)}"
    by_name = {_function(t)["name"]: t for t in tools}
    tool = by_name.get(call["name"]) if isinstance(call["name"], str) else None
    if tool is None:
        return f"unknown API {call['name']!r}"
    params = call["parameters"]
    if not isinstance(params, dict):
        return "parameters is not a JSON object"
    declared = (_function(tool).get("parameters") or {}).get("properties") or {}
    for key, value in params.items():
        if key not in declared:
            return f"{call['name']} has no parameter {key!r}"
        problem = _value_error(key, value, declared[key])
        if problem:
            return problem
    missing = [k for k in (_function(tool).get("parameters") or {}).get("required", []) if k not in params]
    return f"missing required parameters {missing}" if missing else None


def check_react(text: str, tools: Sequence[dict[str, Any]], *, plan: bool = True) -> ReactCheck:
    """Parse one ReACT generation leniently (whitespace around commands) and check the call.

    `plan=False` checks a compact generation (the action alone, no PLAN line)."""
    if not plan:
        if re.match(r"^\s*PLAN\b", text):
            return ReactCheck(False, error="a compact generation has no PLAN")
        text = f"{PLAN_PREFIX}- {COMMAND_END}{COMMAND_SEPARATOR}{text}"
    match = _REACT_RE.match(text)
    if not match:
        return ReactCheck(False, error="expected PLAN ... <COMMAND_END> then APICALL or SPEAK ... <COMMAND_END>")
    plan, cmd, body = match["plan"], match["cmd"], match["body"]
    if COMMAND_END in plan or COMMAND_END in body:
        return ReactCheck(False, plan=plan, error="more than two commands")
    if cmd == "SPEAK":
        if not body.strip():
            return ReactCheck(False, plan=plan, error="empty SPEAK")
        canonical = text == format_react(plan, speak=body) and _is_line(plan) and _is_line(body)
        return ReactCheck(True, action="speak", plan=plan, speak=body, canonical=canonical)
    try:
        call = json.loads(body)
    except json.JSONDecodeError as exc:
        return ReactCheck(False, action="apicall", plan=plan, error=f"APICALL body is not JSON: {exc}")
    problem = check_call(call, tools)
    if problem:
        return ReactCheck(False, action="apicall", plan=plan, error=problem)
    canonical = (
        text == format_react(plan, call=call)
        and _is_line(plan)
        and _in_schema_order(call, tools)
        and all(_is_value(v) for v in call["parameters"].values())
    )
    return ReactCheck(True, action="apicall", plan=plan, call=call, canonical=canonical)


def validate_react(text: str, tools: Sequence[dict[str, Any]], *, strict: bool = False) -> bool:
    """Whether `text` is one well-formed ReACT action; `strict`: exactly the grammar's layout."""
    result = check_react(text, tools)
    return result.ok and (result.canonical or not strict)


def _is_line(text: str) -> bool:
    # Line lengths are not checked: the grammars cap them differently (tokens / characters).
    return bool(_LINE_RE.fullmatch(text))


def _is_value(value: Any) -> bool:
    if not isinstance(value, str):
        return not isinstance(value, (list, dict))
    return is_writable_value(value)


def is_writable_value(value: str) -> bool:
    """Whether the grammars can write this string value (no escapes, within VALUE_MAX_CHARS)."""
    return len(value) <= VALUE_MAX_CHARS and bool(_VALUE_RE.fullmatch(value))


def _in_schema_order(call: dict[str, Any], tools: Sequence[dict[str, Any]]) -> bool:
    tool = next(t for t in tools if _function(t)["name"] == call["name"])
    order = list(((_function(tool).get("parameters") or {}).get("properties") or {}))
    positions = [order.index(k) for k in call["parameters"]]
    return positions == sorted(positions)


# --------------------------------------------------------------------------------------------
# llguidance plumbing: tokenizers, compiled grammars, matchers
# --------------------------------------------------------------------------------------------

_LLTOKENIZERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_LLTOKENIZERS_BY_ID: dict[int, Any] = {}
_TOKENIZER_LOCK = threading.Lock()
_TEMPLATES: "OrderedDict[tuple[int, str], Any]" = OrderedDict()
_TEMPLATE_LOCK = threading.Lock()
_EXECUTOR = None


def _eos_ids(tokenizer: Any, eos_token_ids: Iterable[int] | None) -> list[int]:
    if eos_token_ids is not None:
        ids = [int(i) for i in eos_token_ids]
    else:
        eos = getattr(tokenizer, "eos_token_id", None)
        ids = list(eos) if isinstance(eos, (list, tuple)) else ([int(eos)] if eos is not None else [])
    if not ids:
        raise ValueError("the tokenizer has no EOS token; pass eos_token_ids")
    return ids


def lltokenizer_for(tokenizer: Any, eos_token_ids: Iterable[int] | None = None) -> Any:
    """The llguidance tokenizer of a transformers fast tokenizer, built once (about 1 s) and cached."""
    import llguidance.hf

    eos = tuple(_eos_ids(tokenizer, eos_token_ids))
    with _TOKENIZER_LOCK:
        try:
            per_tok = _LLTOKENIZERS.setdefault(tokenizer, {})
        except TypeError:  # not weak-referenceable
            per_tok = _LLTOKENIZERS_BY_ID.setdefault(id(tokenizer), {})
        if eos not in per_tok:
            per_tok[eos] = llguidance.hf.from_tokenizer(tokenizer, eos_token=list(eos))
        return per_tok[eos]


def llguidance_grammar(constraint: OutputConstraint) -> str:
    """The llguidance grammar text of a constraint."""
    from llguidance import LLMatcher

    if constraint.kind == "lark" and constraint.grammar:
        return LLMatcher.grammar_from_lark(constraint.grammar)
    if constraint.kind == "json_schema" and constraint.json_schema is not None:
        return LLMatcher.grammar_from_json_schema(constraint.json_schema)
    if constraint.kind == "gbnf" and constraint.grammar:
        from llguidance import grammar_from

        return grammar_from("gbnf", constraint.grammar)
    raise ConstraintUnsupported(f"cannot build an llguidance grammar from constraint kind {constraint.kind!r}")


def new_matcher(lltokenizer: Any, constraint: OutputConstraint) -> Any:
    """A fresh LLMatcher for `constraint`; grammars compile once per tokenizer, then deep-copy."""
    from llguidance import LLMatcher

    key = (id(lltokenizer), constraint.kind + "\0" + (constraint.grammar or json.dumps(constraint.json_schema)))
    with _TEMPLATE_LOCK:
        template = _TEMPLATES.get(key)
        if template is not None:
            _TEMPLATES.move_to_end(key)
    if template is None:
        grammar = llguidance_grammar(constraint)
        template = LLMatcher(lltokenizer, grammar, log_level=0)
        if template.is_error():
            raise ValueError(f"invalid grammar: {template.get_error()}")
        with _TEMPLATE_LOCK:
            _TEMPLATES[key] = template
            while len(_TEMPLATES) > 64:
                _TEMPLATES.popitem(last=False)
    return template.deep_copy()


def matches_constraint(text: str, constraint: OutputConstraint, tokenizer: Any) -> bool:
    """Whether the whole `text` is a complete sentence of the constraint's grammar."""
    lltok = lltokenizer_for(tokenizer)
    matcher = new_matcher(lltok, constraint)
    ok = matcher.consume_tokens(lltok.tokenize_str(text))
    return bool(ok and not matcher.is_error() and matcher.is_accepting())


def _executor() -> Any:
    global _EXECUTOR
    if _EXECUTOR is None:
        from llguidance import LLExecutor

        _EXECUTOR = LLExecutor()
    return _EXECUTOR


# --------------------------------------------------------------------------------------------
# transformers: one logits processor for a whole batch, one matcher per row
# --------------------------------------------------------------------------------------------


def expand_rows(constraints: Sequence[OutputConstraint | None], n: int) -> list[OutputConstraint | None]:
    """Per-request constraints -> per-row, in the order `generate(num_return_sequences=n)` uses."""
    return [c for c in constraints for _ in range(n)]


class ConstrainedLogitsProcessor:
    """Masks each batch row's logits with that row's grammar (llguidance), vectorised.

    Rows are those of `generate`'s batch (left-padded prompts; with num_return_sequences the
    rows of one request are adjacent, see `expand_rows`). A row whose constraint is None is left
    alone. A row stops being masked once its matcher has consumed EOS (generate then pads it).
    The processor is stateful: use a new one for every `generate` call.

    transformers applies custom processors before temperature / top-k / top-p, so sampling
    warps the masked distribution, never the other way round.
    """

    def __init__(
        self,
        tokenizer: Any,
        constraints: Sequence[OutputConstraint | None],
        *,
        eos_token_ids: Iterable[int] | None = None,
    ) -> None:
        import numpy as np

        self._np = np
        self.lltokenizer = lltokenizer_for(tokenizer, eos_token_ids)
        self.eos_token_ids = list(self.lltokenizer.eos_tokens)
        self.matchers = [None if c is None else new_matcher(self.lltokenizer, c) for c in constraints]
        self.done = [m is None for m in self.matchers]
        self.errors: list[str | None] = [None] * len(self.matchers)
        self._seen: int | None = None  # sequence length already fed to the matchers
        words = (self.lltokenizer.vocab_size + 31) // 32
        self._bitmask = np.full((len(self.matchers), words), -1, dtype=np.int32)
        self.mask_seconds = 0.0  # time spent computing and applying masks (for the bench)
        self.steps = 0

    @property
    def batch_size(self) -> int:
        return len(self.matchers)

    def accepted(self, row: int) -> bool:
        """Whether row `row` ended as a complete sentence of its grammar (True if unconstrained)."""
        m = self.matchers[row]
        return m is None or (not m.is_error() and m.is_accepting())

    def _feed(self, row: int, token: int) -> None:
        matcher = self.matchers[row]
        if self.done[row] or matcher is None:
            return
        if token in self.eos_token_ids:
            matcher.consume_token(token)  # completes an accepting matcher
            self.done[row] = True
        elif matcher.is_stopped():
            # Ended by something other than our EOS (another stop id, a pad): nothing to mask.
            self.done[row] = True
        elif not matcher.consume_token(token):
            # A token outside the mask (only possible if something after us changed the
            # logits). The matcher now allows EOS only, so the row ends at the next step.
            self.errors[row] = matcher.get_error() or "token rejected"

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        start = time.perf_counter()
        np = self._np
        batch, seq_len = input_ids.shape
        if batch != len(self.matchers):
            raise ValueError(f"batch of {batch} rows, but {len(self.matchers)} constraints")
        if self._seen is None:
            self._seen = seq_len  # the first call sees only the (padded) prompts
        elif seq_len > self._seen:
            new = input_ids[:, self._seen :].tolist()
            for row, tokens in enumerate(new):
                for token in tokens:
                    self._feed(row, int(token))
            self._seen = seq_len
        active = [(m, row) for row, m in enumerate(self.matchers) if not self.done[row]]
        if active:
            self._bitmask.fill(-1)  # rows left out (unconstrained, done) allow every token
            # A matcher in error still returns a mask (EOS only), so a broken row ends at once.
            self._executor_fill(active)
            bits = np.unpackbits(self._bitmask.view(np.uint8), axis=1, bitorder="little")
            vocab = scores.shape[-1]
            if vocab <= bits.shape[1]:
                blocked = bits[:, :vocab] == 0
            else:  # the model's head is wider than the tokenizer: extra ids are never allowed
                blocked = np.ones((batch, vocab), dtype=bool)
                blocked[:, : bits.shape[1]] = bits == 0
            if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64) and scores.is_contiguous():
                # In place through numpy: one pass, no intra-op thread pool (which costs more
                # than the work itself when the cores are shared).
                np.copyto(scores.numpy(), -np.inf, where=blocked)
            else:
                scores = scores.masked_fill(torch.from_numpy(blocked).to(scores.device), float("-inf"))
        self.steps += 1
        self.mask_seconds += time.perf_counter() - start
        return scores

    def feed(self, row: int, token: int) -> None:
        """Advance row `row`'s matcher by the token it drew (the batched decode loop's path)."""
        self._feed(row, token)

    def allowed_bitmask(self, rows: Sequence[int]) -> Any:
        """What each of `rows` (batch-row indices) may draw next: an int32 bitmask
        [len(rows), words] (all ones for unconstrained and finished rows), or None when none
        of them is constrained any more. The batched decode loop feeds the matchers itself
        (`feed`), so no token history is rescanned here."""
        start = time.perf_counter()
        todo = [(self.matchers[row], i) for i, row in enumerate(rows) if not self.done[row]]
        if not todo:
            return None
        bitmask = self._bitmask[: len(rows)]
        bitmask.fill(-1)
        self._executor_fill(todo, bitmask)
        self.mask_seconds += time.perf_counter() - start
        return bitmask

    def apply_bitmask(self, scores: Any, bitmask: Any) -> None:
        """Set to -inf, in place, every logit that `bitmask` (from `allowed_bitmask`) forbids."""
        start = time.perf_counter()
        np = self._np
        vocab = scores.shape[-1]
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, count=min(vocab, bitmask.shape[1] * 32),
                             bitorder="little")
        blocked = bits == 0
        if vocab > bits.shape[1]:  # the model's head is wider than the tokenizer
            blocked = np.concatenate([blocked, np.ones((len(blocked), vocab - bits.shape[1]), dtype=bool)], axis=1)
        if scores.device.type == "cpu" and scores.is_contiguous():
            np.copyto(scores.numpy(), -np.inf, where=blocked)
        else:
            import torch

            scores.masked_fill_(torch.from_numpy(blocked).to(scores.device), float("-inf"))
        self.steps += 1
        self.mask_seconds += time.perf_counter() - start

    def mask_rows(self, scores: Any, rows: Sequence[int]) -> None:
        """Mask `scores` in place, line i with the grammar of batch row `rows[i]`."""
        bitmask = self.allowed_bitmask(rows)
        if bitmask is not None:
            self.apply_bitmask(scores, bitmask)

    def _executor_fill(self, active: list[tuple[Any, int]], bitmask: Any = None) -> None:
        import llguidance.numpy as llnp

        bitmask = self._bitmask if bitmask is None else bitmask
        if len(active) == 1:
            llnp.fill_next_token_bitmask(active[0][0], bitmask, active[0][1])
        else:
            llnp.fill_next_token_bitmask_par(_executor(), active, bitmask)


def logits_processor_for(
    tokenizer: Any,
    constraints: OutputConstraint | None | Sequence[OutputConstraint | None],
    *,
    batch_size: int | None = None,
    eos_token_ids: Iterable[int] | None = None,
) -> ConstrainedLogitsProcessor | None:
    """A logits processor for one `generate` call; None when no row is constrained.

    `constraints`: one per batch row (None for an unconstrained row), or a single constraint
    for all `batch_size` rows. `eos_token_ids`: the ids generate stops on (default: the
    tokenizer's EOS); the grammar allows them once the action is complete.
    """
    if constraints is None or isinstance(constraints, OutputConstraint):
        if constraints is None:
            return None
        rows: list[OutputConstraint | None] = [constraints] * (batch_size or 1)
    else:
        rows = list(constraints)
        if batch_size is not None and len(rows) != batch_size:
            raise ValueError(f"{len(rows)} constraints for a batch of {batch_size}")
    if all(c is None for c in rows):
        return None
    return ConstrainedLogitsProcessor(tokenizer, rows, eos_token_ids=eos_token_ids)


def plain_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema without llguidance's private options (servers other than llguidance reject
    unknown keys)."""
    return {k: v for k, v in schema.items() if k != "x-guidance"}
