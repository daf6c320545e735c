"""Structured action decoding: the agents' output grammars and how each backend enforces them.

This module is the one door to three files, each with one job, and re-exports their names:
`actions.py` (the action text format, its schemas and checks: the bottom of the three),
`grammars.py` (Lark and GBNF grammars built from it), `guidance.py` (llguidance in process:
matchers and the batch logits processor). The request fields a server backend sends for a
constraint live beside that backend (`openai_backend.constraint_for_openai`,
`vllm_backend.vllm_sampling_kwargs`).

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

from josh_core.llm.actions import (
    APICALL_PREFIX,
    COMMAND_END,
    COMMAND_SEPARATOR,
    CONTENT_MAX_CHARS,
    GBNF_REACT_MAX_TOKENS,
    PLAN_MAX_CHARS,
    PLAN_MAX_TOKENS,
    PLAN_PREFIX,
    REACT_MAX_TOKENS,
    SPEAK_MAX_CHARS,
    SPEAK_MAX_TOKENS,
    SPEAK_PREFIX,
    VALUE_MAX_CHARS,
    ReactCheck,
    api_call_schema,
    check_call,
    check_react,
    fc_schema,
    format_react,
    is_writable_value,
    parameters_schema,
    parse_fc_output,
    tool_names,
    validate_react,
)
from josh_core.llm.grammars import (
    _TWIN_SOURCES,
    _TWIN_SOURCES_MAX,
    ACTIONS,
    fc_constraint,
    gbnf_for,
    json_schema_gbnf,
    plain_schema,
    react_constraint,
    react_gbnf,
    react_lark,
)
from josh_core.llm.guidance import (
    ConstrainedLogitsProcessor,
    expand_rows,
    llguidance_grammar,
    lltokenizer_for,
    logits_processor_for,
    matches_constraint,
    new_matcher,
)

__all__ = [
    "ACTIONS", "APICALL_PREFIX", "COMMAND_END", "COMMAND_SEPARATOR", "CONTENT_MAX_CHARS", "GBNF_REACT_MAX_TOKENS",
    "PLAN_MAX_CHARS", "PLAN_MAX_TOKENS", "PLAN_PREFIX", "REACT_MAX_TOKENS", "SPEAK_MAX_CHARS", "SPEAK_MAX_TOKENS",
    "SPEAK_PREFIX", "VALUE_MAX_CHARS", "ConstrainedLogitsProcessor", "ReactCheck", "_TWIN_SOURCES",
    "_TWIN_SOURCES_MAX", "api_call_schema", "check_call", "check_react", "expand_rows", "fc_constraint", "fc_schema",
    "format_react", "gbnf_for", "is_writable_value", "json_schema_gbnf", "llguidance_grammar", "lltokenizer_for",
    "logits_processor_for", "matches_constraint", "new_matcher", "parameters_schema", "parse_fc_output",
    "plain_schema", "react_constraint", "react_gbnf", "react_lark", "tool_names", "validate_react",
]  # fmt: skip
