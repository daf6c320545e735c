"""Training inputs without a model: exported data checks, configuration (defaults, file,
overrides), KTO class-balance weights, base SPECs, the `trainings` table, and the CLI's plain
errors for unusable data."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from josh_core.cli import app
from josh_core.storage import trainings
from josh_core.storage.db import Database
from josh_core.train import (
    DPOTrainConfig,
    KTOTrainConfig,
    SFTTrainConfig,
    TrainingConfigError,
    TrainingDataError,
    build_config,
    load_training_data,
)
from josh_core.train.config import balanced_kto_weights
from josh_core.train.model import resolve_base
from train_fixtures import build_exports


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return build_exports(tmp_path_factory.mktemp("exports"))


SFT_ROW = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- data ---------------------------------------------------------------------------------------


def test_real_exports_load_for_their_kind(exports):
    sft = load_training_data(exports["sft"], "sft")
    kto = load_training_data(exports["kto"], "kto")
    dpo = load_training_data(exports["dpo"], "dpo")
    assert (sft.examples, kto.examples, dpo.examples) == (3, 30, 9)
    assert kto.label_counts() == (15, 15)
    first = json.loads(exports["sft"].read_text().splitlines()[0])
    assert sft.rows[0]["messages"] == first["messages"]  # ReACT rows pass through unchanged
    assert len(sft.sha256) == 64 and sft.sha256 != kto.sha256


@pytest.mark.parametrize("kind,other", [("sft", "kto"), ("sft", "dpo"), ("kto", "dpo"), ("kto", "sft"),
                                        ("dpo", "sft"), ("dpo", "kto")])
def test_wrong_kind_is_refused_with_a_plain_message(exports, kind, other):
    with pytest.raises(TrainingDataError) as error:
        load_training_data(exports[other], kind)
    message = str(error.value)
    assert f"not {kind.upper()} data" in message and f"holds {other.upper()} data" in message
    assert f"josh export --kind {kind}" in message


def test_missing_empty_and_broken_files_are_refused(tmp_path):
    with pytest.raises(TrainingDataError, match="no training data at"):
        load_training_data(tmp_path / "nope.jsonl", "sft")
    with pytest.raises(TrainingDataError, match="is empty: no examples"):
        load_training_data(write_lines(tmp_path / "blank.jsonl", ["", "   "]), "kto")
    with pytest.raises(TrainingDataError, match="line 2 is not JSON"):
        load_training_data(write_lines(tmp_path / "bad.jsonl", [SFT_ROW, "{oops"]), "sft")
    with pytest.raises(TrainingDataError, match="line 1: `messages` must be a non-empty list"):
        load_training_data(write_lines(tmp_path / "none.jsonl", ['{"messages": []}']), "sft")
    with pytest.raises(TrainingDataError, match="rows with fields a, b"):
        load_training_data(write_lines(tmp_path / "other.jsonl", ['{"a": 1, "b": 2}']), "dpo")
    no_assistant = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(TrainingDataError, match="no assistant message"):
        load_training_data(write_lines(tmp_path / "user.jsonl", [no_assistant]), "sft")
    label = json.dumps({"prompt": [{"role": "user", "content": "hi"}],
                        "completion": [{"role": "assistant", "content": "x"}], "label": "yes"})
    with pytest.raises(TrainingDataError, match="label"):
        load_training_data(write_lines(tmp_path / "label.jsonl", [label]), "kto")


def test_openai_preference_rows_and_function_calling_rows_are_normalised(tmp_path):
    tools = [{"type": "function", "function": {"name": "search_hotel", "parameters": {"type": "object"}}}]
    openai_row = {
        "input": {"messages": [{"role": "user", "content": "hotel?"}], "tools": tools},
        "preferred_output": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "search_hotel", "arguments": '{"area": "north"}'}}]}],
        "non_preferred_output": [{"role": "assistant", "content": "no"}],
    }
    trl_row = {"prompt": [{"role": "user", "content": "hotel?"}],
               "chosen": [{"role": "assistant", "content": "", "tool_calls": [
                   {"id": "c1", "type": "function", "function": {"name": "search_hotel", "arguments": {"area": "north"}}}]}],
               "rejected": {"role": "assistant", "content": "no"}, "tools": tools}
    data = load_training_data(write_lines(tmp_path / "dpo.jsonl", [json.dumps(openai_row), json.dumps(trl_row)]), "dpo")
    for row in data.rows:
        assert row["prompt"] == [{"role": "user", "content": "hotel?"}]
        [chosen] = row["chosen"]
        assert chosen["content"] == ""  # None -> "" (templates concatenate strings)
        assert chosen["tool_calls"][0]["function"] == {"name": "search_hotel", "arguments": '{"area": "north"}'}
        assert row["rejected"] == [{"role": "assistant", "content": "no"}]
        assert json.loads(row["tools"]) == tools  # JSON text: Arrow keeps it as it is


# -- configuration ----------------------------------------------------------------------------


def test_defaults_follow_the_paper_scripts_and_trl():
    sft, kto, dpo = build_config("sft"), build_config("kto"), build_config("dpo")
    assert isinstance(sft, SFTTrainConfig) and isinstance(kto, KTOTrainConfig) and isinstance(dpo, DPOTrainConfig)
    assert (sft.lora_r, sft.lora_alpha, sft.learning_rate, sft.num_train_epochs) == (8, 16, 2e-4, 2.0)
    assert (kto.lora_r, kto.learning_rate, kto.beta, kto.num_train_epochs) == (64, 5e-7, 0.1, 1.0)
    assert (kto.desirable_weight, kto.undesirable_weight, kto.balance_weights) == (1.0, 2.71, False)
    assert kto.per_device_train_batch_size * kto.gradient_accumulation_steps == 16
    assert (dpo.lora_r, dpo.learning_rate, dpo.beta) == (8, 5e-6, 0.1)
    assert all(c.load_in_4bit is False and c.max_steps == -1 for c in (sft, kto, dpo))


def test_config_file_then_overrides(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text('max_length = 512\nlearning_rate = 1e-4\n[kto]\nbeta = 0.2\nbalance_weights = true\n'
                    '[sft]\nlora_r = 4\ntrl_args = { save_steps = 50 }\n')
    kto = build_config("kto", toml, {"learning_rate": 3e-6, "max_steps": None})
    assert (kto.max_length, kto.learning_rate, kto.beta, kto.balance_weights, kto.lora_r) == (512, 3e-6, 0.2, True, 64)
    sft = build_config("sft", toml, {"max_steps": 3})
    assert (sft.lora_r, sft.learning_rate, sft.max_steps, sft.trl_args) == (4, 1e-4, 3, {"save_steps": 50})
    js = tmp_path / "train.json"
    js.write_text(json.dumps({"dpo": {"beta": 0.05}, "seed": 7}))
    dpo = build_config("dpo", js)
    assert (dpo.beta, dpo.seed) == (0.05, 7)


def test_bad_settings_are_refused_with_plain_messages(tmp_path):
    with pytest.raises(TrainingConfigError, match="unknown sft setting"):
        build_config("sft", overrides={"beta": 0.1})  # beta is KTO / DPO only
    with pytest.raises(TrainingConfigError, match="unknown training kind"):
        build_config("ppo")
    with pytest.raises(TrainingConfigError, match="KTO needs per_device_train_batch_size >= 2"):
        build_config("kto", overrides={"per_device_train_batch_size": 1})
    with pytest.raises(TrainingConfigError, match="learning_rate must be a positive number"):
        build_config("dpo", overrides={"learning_rate": -1})
    with pytest.raises(TrainingConfigError, match="max_steps"):
        build_config("dpo", overrides={"max_steps": 0})
    bad = tmp_path / "bad.toml"
    bad.write_text("max_length = = 3")
    with pytest.raises(TrainingConfigError, match="not valid JSON or TOML"):
        build_config("sft", bad)
    with pytest.raises(TrainingConfigError, match="no config file"):
        build_config("sft", tmp_path / "missing.toml")


@pytest.mark.parametrize("desirable,undesirable", [(15, 15), (631, 233), (40, 300), (1, 9)])
def test_balanced_kto_weights_land_in_trls_recommended_range(desirable, undesirable):
    d_weight, u_weight = balanced_kto_weights(desirable, undesirable)
    ratio = d_weight * desirable / (u_weight * undesirable)
    assert 1.0 <= ratio <= 4 / 3
    # KTOTrainer's own check (rounded bounds, as it warns): one of the weights is in range.
    lower = round(undesirable * u_weight / desirable, 2)
    assert lower <= d_weight <= round(lower * 1.33, 2) or \
        round(desirable * d_weight / undesirable / 1.33, 2) <= u_weight <= round(desirable * d_weight / undesirable, 2)


def test_base_specs_that_cannot_be_trained_are_refused(tmp_path):
    with pytest.raises(TrainingConfigError, match="cannot train 'openai:gpt-4o'"):
        resolve_base("openai:gpt-4o")
    with pytest.raises(TrainingConfigError, match="no LoRA adapter to continue"):
        resolve_base(f"hf:some/model@{tmp_path}")
    spec = resolve_base("hf:some/model")
    assert (spec.model_path, spec.adapter) == ("some/model", None)


# -- storage ----------------------------------------------------------------------------------


def test_trainings_rows_follow_a_run(tmp_path):
    db = Database(tmp_path / "t.duckdb")
    training_id = trainings.create_training(
        db, kind="kto", base="embedded", data_path="/d/kto.jsonl", data_hash="ab" * 32, examples=30,
        config={"beta": 0.1}, adapter_path="/a/kto",
    )
    record = trainings.get_training(db, training_id)
    assert (record.status, record.metrics, record.finished_at, record.config) == ("running", [], None, {"beta": 0.1})
    trainings.update_training_metrics(db, training_id, [{"step": 1, "loss": 0.7}])
    assert trainings.get_training(db, training_id).losses == [0.7]
    trainings.finish_training(db, training_id, status="done", seconds=1.5,
                              metrics=[{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.5}])
    done = trainings.get_training(db, training_id)
    assert (done.status, done.seconds, done.losses, done.error) == ("done", 1.5, [0.7, 0.5], None)
    assert done.finished_at is not None and done.finished_at >= done.created_at
    assert [t.id for t in trainings.list_trainings(db)] == [training_id]
    with pytest.raises(KeyError):
        trainings.get_training(db, "train-nope")


# -- CLI --------------------------------------------------------------------------------------


def test_cli_refuses_empty_and_wrong_kind_data_without_a_traceback(exports, tmp_path):
    db = tmp_path / "t.duckdb"
    empty = write_lines(tmp_path / "empty.jsonl", [])
    runner = CliRunner()
    for kind, data, expected in [("sft", empty, "is empty: no examples to train on"),
                                 ("kto", exports["dpo"], "holds DPO data"),
                                 ("dpo", tmp_path / "missing.jsonl", "no training data at")]:
        result = runner.invoke(app, ["train", "--kind", kind, "--data", str(data), "--out", str(tmp_path / "out"),
                                     "--db", str(db)])
        assert result.exit_code == 1, result.output
        assert "error:" in result.output and expected in result.output
        assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert not db.exists()  # nothing was recorded: the data was refused before training


def test_cli_prints_untrusted_text_as_plain_text(tmp_path):
    data = write_lines(tmp_path / "[red]x[bold].jsonl", ['{"[/bold]": 1}'])
    result = CliRunner().invoke(app, ["train", "--kind", "sft", "--data", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "[red]x[bold].jsonl" in result.output and "[/bold]" in result.output


def test_nan_metrics_are_stored_as_null():
    from josh_core.train.runner import _finite

    assert _finite(float("nan")) is None and _finite(math.inf) is None and _finite(0.5) == 0.5
