"""Reading one ReACT generation: PLAN text, then the first APICALL or SPEAK command.

Lenient where a weak model slips harmlessly (spacing, a colon after a command, a missing
final <COMMAND_END> when the output simply stopped, a missing PLAN) and strict where the
action would be ambiguous: without an APICALL or SPEAK command the output is a format
error. Anything after the first action is dropped from the message kept in the agent's
history (the raw text stays on the Generation), so a model that goes on to imagine an
APIRETURN does not feed itself fiction.

An APICALL whose body is not a readable call is still an API call: the environment records
it as a bad-format call and answers with an error, which is the paper's "incorrect API
format" error class, distinct from a format error of the command structure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from josh_core.llm.actions import COMMAND_END, format_react
from josh_core.safe_text import valid_json, valid_text
from josh_core.types import ToolCall

_COMMAND = re.compile(r"(?:^|(?<=\n)|(?<=<COMMAND_END>))[ \t]*\**(PLAN|APICALL|SPEAK)\**[ \t]*:?", re.MULTILINE)


@dataclass
class ParsedAction:
    kind: str  # "apicall" | "speak" | "format_error"
    plan: str | None = None
    call: ToolCall | None = None  # None for an unreadable APICALL body
    call_text: str | None = None  # the raw APICALL body
    speak: str | None = None
    error: str | None = None
    text: str = ""  # the action as kept in the agent's history (canonical when possible)


def _segments(text: str) -> list[tuple[str, str]]:
    """[(command, body)] in order; a body ends at <COMMAND_END> or at the next command."""
    marks = list(_COMMAND.finditer(text))
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[m.end():end]
        if COMMAND_END in body:
            body = body[: body.index(COMMAND_END)]
        out.append((m.group(1), body.strip()))
    return out


# An API call's parameters are flat strings; values nested deeper than this are not a call
# (and could not be rendered back or shown without running out of stack).
MAX_CALL_DEPTH = 16


def _nesting_within(value: object, limit: int) -> bool:
    """Whether lists/dicts in `value` nest at most `limit` deep (iterative: no recursion)."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth >= limit:
                return False
            pending.extend((child, depth + 1) for child in item)
    return True


def parse_call(body: str) -> ToolCall | None:
    """The first JSON object of an APICALL body as a ToolCall (None if it is not a call)."""
    start = body.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
    except (ValueError, RecursionError):  # not JSON, or nested past what the decoder takes
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    params = obj.get("parameters", obj.get("arguments", {}))
    if params is None:
        params = {}
    if not isinstance(params, dict) or not _nesting_within(params, MAX_CALL_DEPTH):
        return None
    # The JSON may spell lone surrogates (\ud800) that no later encoding accepts.
    return ToolCall(name=valid_text(obj["name"]), parameters=valid_json(params))


def parse_react(text: str) -> ParsedAction:
    segments = _segments(text)
    plan = None
    for command, body in segments:
        if command == "PLAN":
            plan = body
            continue
        if command == "SPEAK":
            if not body:
                return ParsedAction("format_error", plan=plan, error="SPEAK without a message")
            return ParsedAction("speak", plan=plan, speak=body, text=_render(plan, speak=body))
        call = parse_call(body)
        if call is None:
            kept = f"PLAN {plan} {COMMAND_END}\n" if plan else ""
            return ParsedAction("apicall", plan=plan, call=None, call_text=body,
                                text=f"{kept}APICALL {body} {COMMAND_END}")
        return ParsedAction("apicall", plan=plan, call=call, call_text=body,
                            text=_render(plan, call={"name": call.name, "parameters": call.parameters}))
    if plan is not None:
        return ParsedAction("format_error", plan=plan, error="PLAN was not followed by APICALL or SPEAK")
    return ParsedAction("format_error", error="no PLAN, APICALL or SPEAK command")


def _render(plan: str | None, **action) -> str:
    text = format_react(plan or "", **action)
    return text if plan else text[len("PLAN  " + COMMAND_END + "\n"):]
