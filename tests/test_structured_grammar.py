"""The ReACT and function-calling grammars accept every well-formed action and nothing else.

Each text is checked three ways: the Lark grammar through llguidance (what the transformers
backend enforces), the GBNF twin (what llama.cpp and vLLM's xgrammar enforce; read here by
llguidance's GBNF reader), and the text checker `validate_react`.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from josh_core.llm.base import ConstraintUnsupported, OutputConstraint
from josh_core.llm.openai_backend import constraint_for_openai
from josh_core.llm.structured import (
    PLAN_MAX_CHARS,
    PLAN_MAX_TOKENS,
    REACT_MAX_TOKENS,
    VALUE_MAX_CHARS,
    check_react,
    fc_constraint,
    format_react,
    gbnf_for,
    lltokenizer_for,
    matches_constraint,
    new_matcher,
    parse_fc_output,
    react_constraint,
    react_gbnf,
    validate_react,
)
from josh_core.envs.toolwoz.apis import TOOLS


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from josh_core.llm.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="module")
def react():
    return react_constraint(TOOLS)


@pytest.fixture(scope="module")
def react_as_gbnf(react):
    return OutputConstraint(kind="gbnf", grammar=gbnf_for(react))


def _props(tool):
    return tool["function"]["parameters"]["properties"]


def _sample_value(prop, i=0):
    if "enum" in prop:
        return prop["enum"][i % len(prop["enum"])]
    return ["cheap", "the river bar steakhouse and grill", "king's college", "19:45", "2", "café de paris"][i % 6]


def _long_plan(chars: int) -> str:
    """A plan of exactly `chars` characters of ordinary words (well inside the token cap)."""
    words = ("I will search for the hotel the user wants and then book it for them. " * 10)[: chars - 1]
    return words.rstrip() + "x" * (chars - len(words.rstrip()))


def well_formed_actions() -> list[str]:
    """Every API with no, one, and all of its parameters (in schema order), plus SPEAKs."""
    texts = []
    for tool in TOOLS:
        name = tool["function"]["name"]
        props = _props(tool)
        texts.append(format_react(f"I will call {name}.", call={"name": name, "parameters": {}}))
        for i, (key, prop) in enumerate(props.items()):
            texts.append(format_react("Look it up", call={"name": name, "parameters": {key: _sample_value(prop, i)}}))
        full = {key: _sample_value(prop, i) for i, (key, prop) in enumerate(props.items())}
        texts.append(format_react("Use everything the user said, step by step.", call={"name": name, "parameters": full}))
        for key, prop in props.items():
            for value in prop.get("enum", []):
                texts.append(format_react("enum", call={"name": name, "parameters": {key: value}}))
    texts += [
        format_react("Greet the user.", speak="Hello! How can I help you today?"),
        format_react("Ask", speak="Which day would you like to travel - and from where?"),
        format_react("x", speak="Sure: 4 stars, free parking & wifi; that's 2 nights (ok?)"),
        format_react("Unicode is fine", speak="Très bien, à bientôt"),
        format_react(_long_plan(PLAN_MAX_CHARS), speak="a"),
        format_react("Empty value", call={"name": "search_train", "parameters": {"day": ""}}),
        format_react("Longest value", call={"name": "search_train", "parameters": {"day": "x" * VALUE_MAX_CHARS}}),
    ]
    return texts


def malformed_actions() -> dict[str, str]:
    ok_call = '{"name": "search_hotel", "parameters": {"area": "north"}}'
    return {
        "no PLAN": f"APICALL {ok_call} <COMMAND_END>",
        "lowercase plan": f"plan x <COMMAND_END>\nAPICALL {ok_call} <COMMAND_END>",
        "PLAN only": "PLAN x <COMMAND_END>",
        "no action end": f"PLAN x <COMMAND_END>\nAPICALL {ok_call}",
        "two actions": f"PLAN x <COMMAND_END>\nAPICALL {ok_call} <COMMAND_END>\nSPEAK hi <COMMAND_END>",
        "trailing text": f"PLAN x <COMMAND_END>\nAPICALL {ok_call} <COMMAND_END> thanks",
        "unknown API": 'PLAN x <COMMAND_END>\nAPICALL {"name": "search_taxi", "parameters": {}} <COMMAND_END>',
        "unknown key": 'PLAN x <COMMAND_END>\nAPICALL {"name": "search_hotel", "parameters": {"food": "thai"}} <COMMAND_END>',
        "enum violated": 'PLAN x <COMMAND_END>\nAPICALL {"name": "search_hotel", "parameters": {"area": "downtown"}} <COMMAND_END>',
        "number value": 'PLAN x <COMMAND_END>\nAPICALL {"name": "book_hotel", "parameters": {"people": 2}} <COMMAND_END>',
        "list value": 'PLAN x <COMMAND_END>\nAPICALL {"name": "book_hotel", "parameters": {"day": ["monday"]}} <COMMAND_END>',
        "extra top-level key": 'PLAN x <COMMAND_END>\nAPICALL {"name": "search_hotel", "parameters": {}, "id": "1"} <COMMAND_END>',
        "no parameters key": 'PLAN x <COMMAND_END>\nAPICALL {"name": "search_hotel"} <COMMAND_END>',
        "not JSON": "PLAN x <COMMAND_END>\nAPICALL search_hotel(area=north) <COMMAND_END>",
        "SPEAK over two lines": "PLAN x <COMMAND_END>\nSPEAK hello\nthere <COMMAND_END>",
        "empty PLAN": "PLAN  <COMMAND_END>\nSPEAK hi <COMMAND_END>",
        "empty SPEAK": "PLAN x <COMMAND_END>\nSPEAK  <COMMAND_END>",
        "value too long": format_react("x", call={"name": "search_train", "parameters": {"day": "x" * (VALUE_MAX_CHARS + 1)}}),
    }


def layout_variants() -> dict[str, str]:
    """Semantically fine, but not the grammar's exact layout: lenient check yes, grammar no."""
    return {
        "keys out of schema order": 'PLAN x <COMMAND_END>\nAPICALL {"name": "search_hotel", "parameters": {"stars": "4", "area": "north"}} <COMMAND_END>',
        "compact JSON": 'PLAN x <COMMAND_END>\nAPICALL {"name":"search_hotel","parameters":{"area":"north"}} <COMMAND_END>',
        "no newline between commands": 'PLAN x <COMMAND_END> SPEAK hi <COMMAND_END>',
        "no space before COMMAND_END": "PLAN x<COMMAND_END>\nSPEAK hi<COMMAND_END>",
        "escaped quote in value": 'PLAN x <COMMAND_END>\nAPICALL {"name": "search_attraction", "parameters": {"name": "the \\"place\\""}} <COMMAND_END>',
    }


@pytest.mark.parametrize("text", well_formed_actions())
def test_grammar_accepts_well_formed_action(text, tokenizer, react, react_as_gbnf):
    assert matches_constraint(text, react, tokenizer), text
    assert matches_constraint(text, react_as_gbnf, tokenizer), text
    assert validate_react(text, TOOLS, strict=True), check_react(text, TOOLS)


@pytest.mark.parametrize("case", sorted(malformed_actions()))
def test_grammar_rejects_malformed_action(case, tokenizer, react, react_as_gbnf):
    text = malformed_actions()[case]
    assert not matches_constraint(text, react, tokenizer)
    assert not matches_constraint(text, react_as_gbnf, tokenizer)
    assert not validate_react(text, TOOLS, strict=True)


def test_lines_beyond_the_caps_are_rejected_by_both_grammars(tokenizer, react, react_as_gbnf):
    """PLAN is capped at PLAN_MAX_TOKENS tokens (Lark) and PLAN_MAX_CHARS characters (GBNF);
    the text checker does not look at lengths."""
    text = format_react(_long_plan(PLAN_MAX_CHARS + 100), speak="a")
    assert len(tokenizer.encode(text.split("<")[0])) > PLAN_MAX_TOKENS
    assert not matches_constraint(text, react, tokenizer)
    assert not matches_constraint(text, react_as_gbnf, tokenizer)
    assert validate_react(text, TOOLS, strict=True)


def test_checker_explains_semantic_errors():
    bad = malformed_actions()
    assert "unknown API" in check_react(bad["unknown API"], TOOLS).error
    assert "no parameter 'food'" in check_react(bad["unknown key"], TOOLS).error
    assert "downtown" in check_react(bad["enum violated"], TOOLS).error
    assert "not a string" in check_react(bad["number value"], TOOLS).error
    for case in ("unknown API", "unknown key", "enum violated", "number value", "list value", "not JSON",
                 "extra top-level key", "two actions", "trailing text", "no PLAN", "PLAN only"):
        assert not validate_react(bad[case], TOOLS), case


@pytest.mark.parametrize("case", sorted(layout_variants()))
def test_layout_variants_parse_leniently_but_are_not_grammar_output(case, tokenizer, react):
    text = layout_variants()[case]
    assert validate_react(text, TOOLS)
    assert not validate_react(text, TOOLS, strict=True)
    assert not matches_constraint(text, react, tokenizer)


def test_check_react_returns_the_action():
    text = format_react("Find it", call={"name": "search_hotel", "parameters": {"area": "north", "stars": "4"}})
    result = check_react(text, TOOLS)
    assert result.ok and result.canonical and result.action == "apicall"
    assert result.call == {"name": "search_hotel", "parameters": {"area": "north", "stars": "4"}}
    assert result.plan == "Find it"
    speak = check_react(format_react("Greet", speak="Hi there"), TOOLS)
    assert (speak.action, speak.speak) == ("speak", "Hi there")


def _random_walk(matcher, lltok, rng, limit):
    """Sample uniformly among the tokens the grammar allows until EOS: an adversarial model."""
    import llguidance.numpy as llnp

    mask = llnp.allocate_token_bitmask(1, lltok.vocab_size)
    tokens = []
    while len(tokens) < limit:
        llnp.fill_next_token_bitmask(matcher, mask, 0)
        allowed = np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little")[: lltok.vocab_size])
        token = int(rng.choice(allowed))
        assert matcher.consume_token(token), matcher.get_error()
        if token in lltok.eos_tokens:
            return lltok.decode_str(tokens), len(tokens) + 1
        tokens.append(token)
    raise AssertionError(f"no EOS after {limit} tokens: {lltok.decode_str(tokens)!r}")


@pytest.mark.parametrize("form", ["lark", "gbnf"])
def test_any_path_through_the_grammar_is_a_valid_action(form, tokenizer, react, react_as_gbnf):
    lltok = lltokenizer_for(tokenizer)
    rng = random.Random(7)
    constraint = react if form == "lark" else react_as_gbnf
    actions = set()
    for _ in range(25):
        text, used = _random_walk(new_matcher(lltok, constraint), lltok, rng, 4 * REACT_MAX_TOKENS)
        result = check_react(text, TOOLS)
        assert result.ok, (text, result.error)
        actions.add(result.action)
        if form == "gbnf":
            assert result.canonical, text
    assert actions == {"apicall", "speak"}


def test_actions_can_be_narrowed_to_a_call_or_a_message(tokenizer):
    call = format_react("Search.", call={"name": "search_hotel", "parameters": {"area": "north"}})
    speak = format_react("Ask.", speak="Which area?")
    only_call = react_constraint(TOOLS, actions=("apicall",))
    only_speak = react_constraint(TOOLS, actions=("speak",))
    for constraint, accepted, rejected in ((only_call, call, speak), (only_speak, speak, call)):
        twin = OutputConstraint(kind="gbnf", grammar=gbnf_for(constraint))
        assert matches_constraint(accepted, constraint, tokenizer) and matches_constraint(accepted, twin, tokenizer)
        assert not matches_constraint(rejected, constraint, tokenizer)
        assert not matches_constraint(rejected, twin, tokenizer)
    with pytest.raises(ValueError):
        react_constraint(TOOLS, actions=("think",))


def test_fc_constraint_accepts_calls_and_content(tokenizer):
    fc = fc_constraint(TOOLS)
    fc_gbnf = OutputConstraint(kind="gbnf", grammar=gbnf_for(fc))
    call = json.dumps({"tool_call": {"name": "search_train", "arguments": {"day": "monday", "departure": "ely"}}})
    content = json.dumps({"content": "Which day do you want to travel?"})
    for text in (call, content):
        assert matches_constraint(text, fc, tokenizer)
        assert matches_constraint(text, fc_gbnf, tokenizer)
    assert parse_fc_output(call)[1][0].name == "search_train"
    assert parse_fc_output(call)[1][0].parameters == {"day": "monday", "departure": "ely"}
    assert parse_fc_output(content) == ("Which day do you want to travel?", [])
    for bad in (
        json.dumps({"tool_call": {"name": "search_taxi", "arguments": {}}}),
        json.dumps({"tool_call": {"name": "search_train", "arguments": {"stars": "4"}}}),
        json.dumps({"content": "hi", "tool_call": None}),
        "Sure, which day?",
    ):
        assert not matches_constraint(bad, fc, tokenizer), bad
        assert not matches_constraint(bad, fc_gbnf, tokenizer), bad
    with pytest.raises(ValueError):
        parse_fc_output("Sure, which day?")


def test_gbnf_twin_is_built_from_the_same_tools():
    gbnf = react_gbnf(TOOLS)
    for tool in TOOLS:
        assert f'\\"{tool["function"]["name"]}\\"' in gbnf
    assert gbnf_for(react_constraint(TOOLS)) == gbnf
    with pytest.raises(ConstraintUnsupported):
        gbnf_for(OutputConstraint(kind="lark", grammar='start: "x"'))


def test_request_fields_for_servers():
    react = react_constraint(TOOLS)
    fc = fc_constraint(TOOLS)
    vllm = constraint_for_openai(react, "vllm")
    assert vllm == {"extra_body": {"structured_outputs": {"grammar": react_gbnf(TOOLS)}}}
    assert constraint_for_openai(react, "vllm-legacy") == {"extra_body": {"guided_grammar": react_gbnf(TOOLS)}}
    assert constraint_for_openai(react, "llamacpp") == {"extra_body": {"grammar": react_gbnf(TOOLS)}}
    with pytest.raises(ConstraintUnsupported):
        constraint_for_openai(react, "openai")
    response_format = constraint_for_openai(fc, "openai")["response_format"]
    assert response_format["type"] == "json_schema"
    assert "x-guidance" not in response_format["json_schema"]["schema"]
    assert constraint_for_openai(fc, "vllm")["extra_body"]["structured_outputs"]["json"]["anyOf"]
    with pytest.raises(ValueError):
        constraint_for_openai(fc, "tgi")


def test_gbnf_twins_are_built_on_demand_and_bounded():
    """Grounded grammars are new for every generation: their twins are built only when a
    backend asks, and only the newest few hundred sources are remembered."""
    from josh_core.llm import structured
    from josh_core.policies.grounding import grounded_tools

    first = react_constraint(grounded_tools(TOOLS, ["value 0"]))
    assert 'value 0' in gbnf_for(first)
    for i in range(1, structured._TWIN_SOURCES_MAX + 1):
        react_constraint(grounded_tools(TOOLS, [f"value {i}"]))
    assert len(structured._TWIN_SOURCES) == structured._TWIN_SOURCES_MAX
    with pytest.raises(ConstraintUnsupported):
        gbnf_for(first)
    assert gbnf_for(react_constraint(TOOLS))  # a constraint made again has its twin again
