"""The training-kind registry (josh_core/train/kinds.py): every reader of "which kinds exist"
(`josh train`, `josh selftrain`, `--config` tables, the runner, the app's form) takes them from it,
so a kind registered once is a kind everywhere."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from hardening_fixtures import invoke, no_traceback
from josh_core.extract import EXPORT_KINDS
from josh_core.train import kinds
from josh_core.train.config import SFTTrainConfig, TrainConfig, TrainingConfigError
from josh_core.train.sft import build_sft_trainer
from train_fixtures import tiny_model, write_sft


def test_every_registered_kind_is_whole():
    assert {"sft", "kto", "dpo"} <= set(kinds.KINDS)
    for kind in kinds.KINDS.values():
        assert issubclass(kind.config, TrainConfig) and kind.config.kind == kind.name
        config = kinds.build_config(kind.name)  # the defaults pass the checks
        assert isinstance(config, kind.config)
        assert (kind.export is None) != (kind.episodes is None)
        if kind.export is not None:
            assert kind.export in EXPORT_KINDS, f"{kind.name} trains on an export kind nobody writes"
        # Every setting a kind declares has help (it becomes a flag, a form field, a --config key).
        for setting in kinds.settings(kind.name):
            assert setting.help, f"{kind.name}.{setting.name} has no help"
        assert set(kind.form_settings()) <= {s.name for s in kinds.settings(kind.name)}


@dataclass
class CopyTrainConfig(SFTTrainConfig):
    """A kind as a plugin would add it: SFT's trainer, one setting of its own."""

    note: str = field(default="none", metadata={"help": "A text setting of this kind only."})

    kind = "sft-copy"


@pytest.fixture
def copy_kind(monkeypatch):
    kind = kinds.TrainingKind("sft-copy", "SFT copy", CopyTrainConfig, build_sft_trainer, export="sft",
                              summary="SFT again", form=("note",))
    monkeypatch.setitem(kinds.KINDS, "sft-copy", kind)
    return kind


def test_a_kind_registered_once_is_known_everywhere(copy_kind, tmp_path):
    from josh_core.launch import training_settings
    from josh_core.train.selftrain import SelftrainConfig

    # --config files: its table is its own, and the other kinds' tables are not read as settings.
    toml = tmp_path / "train.toml"
    toml.write_text('learning_rate = 1e-4\n[sft-copy]\nnote = "from the file"\n[sft]\nlora_r = 4\n')
    config = kinds.build_config("sft-copy", toml)
    assert (config.note, config.learning_rate, config.lora_r) == ("from the file", 1e-4, 8)
    assert kinds.build_config("sft", toml).lora_r == 4
    # `josh train --kind sft-copy`: its settings listed and given as flags.
    listed = invoke("train", "--kind", "sft-copy", "--list-settings")
    assert listed.exit_code == 0 and "note" in listed.output and "A text setting" in listed.output
    # `josh selftrain --kind sft-copy` and the app's form.
    assert SelftrainConfig(kinds=["sft-copy"]).kinds == ["sft-copy"]
    assert [s.name for s in training_settings("sft-copy")][-1] == "note"
    # The registry's reader of flag values: text stays text for a text setting.
    assert kinds.setting_value("sft-copy", "note", "3") == "3"
    assert kinds.setting_value("sft-copy", "lora_r", "3") == 3


def test_a_registered_kind_trains_through_the_runner(copy_kind, tmp_path):
    """The runner takes the trainer from the registry: the copy trains a real (tiny) model."""
    model = tiny_model(tmp_path / "tiny")
    data = write_sft(tmp_path / "sft.jsonl")
    result = invoke("train", "--kind", "sft-copy", "--data", str(data), "--base", f"hf:{model}", "--out",
                    str(tmp_path / "out"), "--db", str(tmp_path / "t.duckdb"), "--max-steps", "1",
                    "--note", "flagged", "--gradient-accumulation-steps", "1", "--json")
    assert result.exit_code == 0, result.output
    trained = json.loads(result.output.strip().splitlines()[-1])
    assert trained["kind"] == "sft-copy" and trained["steps"] == 1
    manifest = json.loads((tmp_path / "out" / "josh_training.json").read_text())
    assert manifest["config"]["note"] == "flagged" and manifest["config"]["gradient_accumulation_steps"] == 1


def test_unknown_kinds_and_settings_are_refused_by_name(tmp_path):
    result = invoke("train", "--kind", "ppo-typo", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and no_traceback(result)
    assert "unknown training kind 'ppo-typo'" in result.output and "sft" in result.output
    data = write_sft(tmp_path / "sft.jsonl")
    result = invoke("train", "--kind", "sft", "--data", str(data), "--out", str(tmp_path / "out"), "--betta", "1")
    assert result.exit_code == 1 and "unknown sft setting: betta" in result.output
    assert not (tmp_path / "out").exists()
    result = invoke("train", "--kind", "sft", "--out", str(tmp_path / "out"), "--db", str(tmp_path / "t.duckdb"))
    assert result.exit_code == 1 and "--data is required for sft" in result.output
    with pytest.raises(TrainingConfigError, match="unknown training kind"):
        kinds.get_kind("nope")


def test_export_options_take_the_export_kinds_only():
    from pydantic import ValidationError

    from josh_core.extract import ExportOptions

    assert ExportOptions(kind="kto").kind == "kto"
    with pytest.raises(ValidationError, match="unknown export kind"):
        ExportOptions(kind="grpo")


def test_setting_names_are_the_dataclass_fields():
    for name in kinds.KINDS:
        fields = {f.name for f in dataclasses.fields(kinds.get_kind(name).config)}
        assert {s.name for s in kinds.settings(name)} == fields
