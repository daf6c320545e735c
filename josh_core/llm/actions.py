"""The agents' action text, one place: what a ReACT or compact action looks like byte for byte
(`format_react`), the JSON schemas of API calls and function calling built from a tool list,
reading a function-calling reply back (`parse_fc_output`) and checking a text against the
format (`check_react`, `validate_react`, `check_call`). Grammars that enforce this format while
decoding are in `grammars.py`; the parsers the agents use are in `policies/parse.py`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

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
