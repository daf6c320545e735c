"""Chat formatting shared by the in-process backends (transformers, vLLM offline).

Servers (OpenAI, `vllm serve`) turn messages and tools into a prompt and parse tool calls
themselves. In-process we do it: messages become the dicts a chat template expects, tools are
described in the system message when the template has no tool support of its own, and tool
calls come back as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (the
format most open chat models are trained on), parsed here into `ToolCall`s.
"""

from __future__ import annotations

import json
import re
from typing import Any

from josh_core.types import Message, ToolCall

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def tools_instruction(tools: list[dict[str, Any]]) -> str:
    """System-message text that describes the tools and the call format."""
    lines = [
        "You can call these functions. To call one, reply with exactly",
        f'{TOOL_CALL_OPEN}{{"name": "<function name>", "arguments": {{...}}}}{TOOL_CALL_CLOSE}',
        "and nothing else; you will get its result in a message from the tool. To talk to the",
        "user instead, reply with plain text. Functions:",
    ]
    for tool in tools:
        fn = tool.get("function", tool)
        lines.append(json.dumps({"name": fn.get("name"), "description": fn.get("description", ""),
                                 "parameters": fn.get("parameters", {})}))
    return "\n".join(lines)


def template_supports_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "tools" in template


def format_tool_calls(calls: list[ToolCall]) -> str:
    return "\n".join(
        f"{TOOL_CALL_OPEN}{json.dumps({'name': c.name, 'arguments': c.parameters})}{TOOL_CALL_CLOSE}"
        for c in calls
    )


def to_template_messages(messages: list[Message], tools: list[dict[str, Any]] | None,
                         native_tools: bool) -> list[dict[str, Any]]:
    """Messages as chat-template dicts; tools folded into the system text unless native."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        content = msg.content
        if msg.role == "assistant" and msg.tool_calls:
            content = (content + "\n" if content else "") + format_tool_calls(msg.tool_calls)
        out.append({"role": msg.role, "content": content})
    if tools and not native_tools:
        instruction = tools_instruction(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instruction}
        else:
            out.insert(0, {"role": "system", "content": instruction})
    return out


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall] | None]:
    """Split generated text into (plain content, tool calls or None).

    A block whose JSON does not parse is left in the content, so the agent sees (and records)
    the malformed output rather than silently losing it.
    """
    if TOOL_CALL_OPEN not in text:
        return text.strip(), None
    calls: list[ToolCall] = []
    kept: list[str] = []
    last = 0
    for i, match in enumerate(_TOOL_CALL_RE.finditer(text)):
        kept.append(text[last : match.start()])
        last = match.end()
        try:
            payload = json.loads(match.group(1))
            name = payload["name"]
            args = payload.get("arguments", payload.get("parameters", {}))
            if isinstance(args, str):
                args = json.loads(args)
            if not isinstance(name, str) or not isinstance(args, dict):
                raise ValueError("bad tool call shape")
        except (ValueError, KeyError, TypeError):
            kept.append(match.group(0))
            continue
        calls.append(ToolCall(name=name, parameters=args, id=f"call_{i}"))
    kept.append(text[last:])
    content = "".join(kept).strip()
    return content, (calls or None)


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Text up to (not including) the earliest stop string, and whether one was found."""
    if not stop:
        return text, False
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True
