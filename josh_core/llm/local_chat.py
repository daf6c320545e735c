"""Chat formatting shared by the in-process backends (transformers, vLLM offline).

Servers (OpenAI, `vllm serve`) turn messages and tools into a prompt and parse tool calls
themselves. In-process we do it, with one text form for function calling that is also what
`josh_core.llm.structured.fc_constraint` enforces when decoding is constrained:

    {"tool_call": {"name": "<function>", "arguments": {...}}}    to call a function
    {"content": "<text for the user>"}                           to answer

The tools and this form are described in the system message; earlier calls in the history are
written back in the same form so the model sees consistent examples of its own format. Plain
text that is not such an object is taken as content, so an unconstrained model that ignores
the form still talks to the user.
"""

from __future__ import annotations

import json
from typing import Any

from josh_core.llm.base import Choice
from josh_core.safe_text import valid_json, valid_text
from josh_core.types import Message, ToolCall


def tools_instruction(tools: list[dict[str, Any]]) -> str:
    """System-message text that describes the tools and the reply format."""
    lines = [
        "You can call functions. To call one, reply with only this JSON object:",
        '{"tool_call": {"name": "<function name>", "arguments": {<argument>: <value>, ...}}}',
        "You get its result in a message from the tool, then you may call another function.",
        'To talk to the user, reply with only {"content": "<your message>"}.',
        "Functions:",
    ]
    for tool in tools:
        fn = tool.get("function", tool)
        lines.append(json.dumps({"name": fn.get("name"), "description": fn.get("description", ""),
                                 "parameters": fn.get("parameters", {})}))
    return "\n".join(lines)


def format_tool_call(call: ToolCall) -> str:
    return json.dumps({"tool_call": {"name": call.name, "arguments": call.parameters}})


def to_template_messages(messages: list[Message], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Messages as chat-template dicts; tools (when given) folded into the system text."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        content = msg.content
        if msg.role == "assistant" and msg.tool_calls:
            content = "\n".join(format_tool_call(c) for c in msg.tool_calls)
        elif msg.role == "assistant" and tools:
            content = json.dumps({"content": content})
        out.append({"role": msg.role, "content": content})
    if tools:
        instruction = tools_instruction(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instruction}
        else:
            out.insert(0, {"role": "system", "content": instruction})
    return out


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall] | None]:
    """Split a function-calling generation into (content, tool calls or None).

    Each line that is a `{"tool_call": ...}` object becomes a call; `{"content": ...}` gives
    the content; anything else stays content verbatim (a malformed call is kept as text so
    the caller can see and record it).
    """
    calls: list[ToolCall] = []
    kept: list[str] = []
    stripped = text.strip()
    chunks = [stripped] if _json_object(stripped) is not None else stripped.splitlines()
    for chunk in chunks:
        obj = _json_object(chunk.strip())
        if isinstance(obj, dict) and isinstance(obj.get("tool_call"), dict):
            call = obj["tool_call"]
            args = call.get("arguments", call.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    args = None
            if isinstance(call.get("name"), str) and isinstance(args, dict):
                calls.append(ToolCall(name=valid_text(call["name"]), parameters=valid_json(args),
                                      id=f"call_{len(calls)}"))
                continue
        if isinstance(obj, dict) and set(obj) == {"content"} and isinstance(obj["content"], str):
            kept.append(obj["content"])
            continue
        kept.append(chunk)
    return "\n".join(kept).strip(), (calls or None)


def _json_object(text: str) -> Any:
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Text up to (not including) the earliest stop string, and whether one was found."""
    if not stop:
        return text, False
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


def decoded_choice(tokens: list[int], finish_reason: str | None, request: Any, tokenizer: Any) -> Choice:
    """One sampled row of an in-process batch as a `Choice`: decoded, cut at the request's stop
    strings, tool calls parsed when the request offers tools (finish reason `tool_calls`)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    text, _ = cut_at_stop(text, request.sampling.stop)
    finish = finish_reason or "length"
    content, calls = parse_tool_calls(text) if request.tools else (text.strip(), None)
    if calls:
        finish = "tool_calls"
    return Choice(text=content, tool_calls=calls, finish_reason=finish)
