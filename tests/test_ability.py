"""The general-ability check (`josh ability`, josh_core/ability): each check kind accepts and
refuses the right strings; the shipped prompts and passages load; a run with the tiny random
Llama (train_fixtures.tiny_model) scores its passages as HF's own loss does and compares agents."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from josh_core.ability.checks import CHECKS, PARAMETERS, check_problem, passes
from josh_core.ability.run import load_passages, load_prompts
from josh_core.cli import app
from train_fixtures import tiny_model

# (check, responses it accepts, responses it refuses)
CASES = [
    ({"kind": "max_words", "n": 3}, ["one two three", "It's well-known."], ["one two three four", ""]),
    ({"kind": "min_words", "n": 4}, ["one two three four", "a b c d e"], ["one two three", "   "]),
    ({"kind": "include", "words": ["salt", "wave"]}, ["A Wave of SALT.", "salt, wave"],
     ["salty waves", "only salt here"]),
    ({"kind": "exclude", "words": ["hot"]}, ["It is shot through with light.", "warm and bright"],
     ["Hot!", "very hot indeed", ""]),
    ({"kind": "frequency", "word": "sand", "min": 2}, ["sand, more Sand", "sand sand sand"],
     ["sand and sandy beaches", "no beach"]),
    ({"kind": "lowercase"}, ["all lower case here.", "numbers 123 are fine"], ["Capital start", "ALL", "123 456"]),
    ({"kind": "uppercase"}, ["ALL CAPS HERE!", "WAIT 5 MINUTES"], ["ALL CAPS but one", "12 34"]),
    ({"kind": "bullets", "n": 2}, ["- one\n- two", "Intro:\n* one\n  * two\nOutro", "• a\n• b"],
     ["- one\n- two\n- three", "-one\n-two", "1. one\n2. two"]),
    ({"kind": "numbered", "n": 3}, ["1. a\n2. b\n3. c", "Steps:\n1) a\n2) b\n10) c"], ["1. a\n2. b", "- a\n- b\n- c"]),
    ({"kind": "json_keys", "keys": ["name", "age"]}, ['{"name": "Ann", "age": 3}', '```json\n{"name": 1, "age": 2, "x": 0}\n```'],
     ['{"name": "Ann"}', 'Here it is: {"name": "Ann", "age": 3}', '["name", "age"]']),
    ({"kind": "starts_with", "phrase": "Dear Sam,"}, ["Dear Sam, come along.", "  dear sam, hi"],
     ["Hi. Dear Sam, come", "Dear Sam come"]),
    ({"kind": "ends_with", "phrase": "stay dry"}, ["Take an umbrella and stay dry", "So stay dry.", "STAY DRY!"],
     ["stay dry, friends", "Stay dry and warm."]),
    ({"kind": "ends_with", "phrase": "Any questions?"}, ["That is all. Any questions?"], ["Any questions?!?", "Any questions"]),
    ({"kind": "no_commas"}, ["No commas here.", "Just words"], ["One, two", "Chinese，comma", ""]),
    ({"kind": "paragraphs", "n": 2}, ["First part.\n\nSecond part.", "A\n \nB\n"], ["One block\nstill one", "A\n\nB\n\nC"]),
    ({"kind": "quoted"}, ['"A goldfish named Bubbles"', "“Patience is bitter.”"], ["Bubbles", '"half quoted']),
    ({"kind": "title"}, ["<<Stars at Night>>\nTwinkle", "A poem <<x>> here"], ["<< >> empty", "<Title>", "no title"]),
    ({"kind": "postscript", "marker": "P.S."}, ["Hi.\n\nP.S. Bring cake.", "P.S. only"], ["Hi. P.S. inline", "PS: no"]),
]


@pytest.mark.parametrize("check,accepted,refused", CASES, ids=[f"{c['kind']}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_each_check_kind_accepts_and_refuses_the_right_strings(check, accepted, refused):
    for response in accepted:
        assert passes(response, check), (check, response)
    for response in refused:
        assert not passes(response, check), (check, response)


def test_every_kind_is_tested_and_malformed_checks_are_refused():
    assert {c["kind"] for c, _, _ in CASES} == set(CHECKS) == set(PARAMETERS)
    assert check_problem({"kind": "max_words"}) == "check max_words takes n, got none"
    assert "unknown check kind" in check_problem({"kind": "rhymes"})
    with pytest.raises(ValueError, match="unknown check kind"):
        passes("text", {"kind": "rhymes"})


def test_the_shipped_prompts_and_passages():
    prompts, passages = load_prompts(), load_passages()
    assert 95 <= len(prompts) <= 110 and len({p.id for p in prompts}) == len(prompts)
    assert {c["kind"] for p in prompts for c in p.checks} == set(CHECKS)  # every kind is used
    assert len(passages) == 30 and len({p.id for p in passages}) == 30
    # Held-out general English: nothing of the ToolWOZ domains the agents are trained on.
    text = " ".join(p.text.lower() for p in passages)
    for word in ("restaurant", "hotel", "train ", "booking", "attraction"):
        assert word not in text, word
    assert [p.id for p in load_prompts(3)] == [p.id for p in prompts[:3]]
    assert {c["kind"] for p in load_prompts(17) for c in p.checks} == set(CHECKS)  # a small run sees every kind


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ability") / "model")


@pytest.mark.slow
def test_passage_nll_is_the_models_own_loss_and_near_uniform_for_a_random_model(tiny):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from josh_core.ability.run import passage_nll

    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    texts = [p.text for p in load_passages(5)]
    scored = passage_nll(model, tokenizer, texts, batch_size=3)  # padded batches of different lengths
    for text, (nll, n) in zip(texts, scored):
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=ids).loss)
        assert n == ids.shape[1] - 1 and nll == pytest.approx(loss, abs=1e-4)
        assert abs(nll - math.log(len(tokenizer))) < 1.0  # a random model spreads its bets evenly


@pytest.mark.slow
def test_a_run_compares_agents_writes_json_and_prints_tables(tiny, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ability.json"
    args = ["ability", "--agent", f"hf:{tiny}", "--limit", "4", "--passages", "3", "--max-new-tokens", "8",
            "--batch-size", "2", "--resamples", "200", "--out", str(out)]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "Verifiable instructions: 4 prompts" in shown.output and "Held-out text: 3 passages" in shown.output
    report = json.loads(out.read_text())
    (agent,) = report["agents"]
    assert agent["prompts"] == 4 and len(agent["responses"]) == 4 and len(agent["passages"]) == 3
    assert all(r["tokens"] <= 8 for r in agent["responses"]) and agent["seconds_per_prompt"] > 0
    assert agent["passed"] == sum(r["passed"] for r in agent["responses"])
    assert report["settings"]["prompts"] == 4 and len(report["settings"]["instructions_sha256"]) == 64

    # The same model under a second SPEC (a trailing slash names the same folder): the
    # responses and scores are the same, so every difference is exactly zero.
    twice = runner.invoke(app, [*args[:3], "--agent", f"hf:{tiny}/", *args[3:-2], "--json"])
    assert twice.exit_code == 0, twice.output
    report = json.loads(twice.stdout)
    (difference,) = report["differences"]
    assert difference["changed_responses"] == 0
    for name in ("pass_rate", "nll"):
        assert difference[name] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    refused = runner.invoke(app, ["ability", "--agent", "oracle"])
    assert refused.exit_code == 1 and "in-process transformers models only" in refused.output
