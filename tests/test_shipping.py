"""Shipped adapters (`josh adapters ship / list / verify`, josh_core/train/shipping.py): a real
tiny training (train_fixtures.tiny_model, a random one-layer Llama) shipped into a temporary
shipped folder, loaded back onto its float32 base, verified, tampered with, refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from josh_core.adapter_folder import MANIFEST_FILE, RESUME_FILE, SHIPPED_DIR_ENV, adapter_problem
from josh_core.cli import app
from josh_core.files import file_sha256
from josh_core.train.shipping import (
    MAX_SHIPPED_BYTES,
    SHIPPED_MANIFEST,
    ShippingError,
    base_weights,
    list_shipped,
    ship_adapter,
    verify_shipped,
)
from train_fixtures import tiny_model, write_sft

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(tiny base model folder, the SFT data file, a finished training's output folder)."""
    from josh_core.train import train

    folder = tmp_path_factory.mktemp("ship")
    model, data = tiny_model(folder / "model"), write_sft(folder / "sft.jsonl")
    # A high learning rate so that the adapter moves the logits well beyond float16's rounding.
    settings = {"max_length": 64, "gradient_accumulation_steps": 1, "warmup_steps": 0, "learning_rate": 5e-2,
                "max_steps": 4}
    train("sft", data, f"hf:{model}", folder / "out", overrides=settings)
    return model, data, folder / "out"


@pytest.fixture
def shipped_root(tmp_path, monkeypatch):
    root = tmp_path / "adapters"
    monkeypatch.setenv(SHIPPED_DIR_ENV, str(root))
    return root


def _logits(model_dir: Path, adapter: Path | None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    ids = torch.tensor([[1, 17, 923, 4051, 88, 2, 640, 12]])
    with torch.no_grad():
        return model(ids).logits, model


def test_ship_writes_float16_weights_and_a_manifest_that_loads_onto_the_float32_base(trained, shipped_root):
    import torch
    from safetensors.torch import load_file

    model, data, out = trained
    manifest = ship_adapter(out, "tiny-sft", metrics={"val_average_reward": 0.25}, note="a test")
    folder = shipped_root / "tiny-sft"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                          SHIPPED_MANIFEST]
    weights = load_file(str(folder / "adapter_model.safetensors"))
    assert weights and {t.dtype for t in weights.values()} == {torch.float16}
    trained_size = (out / "adapter_model.safetensors").stat().st_size
    assert (folder / "adapter_model.safetensors").stat().st_size < 0.6 * trained_size  # about half
    record = json.loads((out / MANIFEST_FILE).read_text())
    stored = json.loads((folder / SHIPPED_MANIFEST).read_text())
    assert stored["spec"] == manifest.spec == f"hf:{model}@shipped:tiny-sft"
    assert stored["data"] == {"sha256": file_sha256(data), "rows": 4, "file": "sft.jsonl"}
    assert stored["base"]["weights_sha256"] == base_weights(str(model)) != {}
    assert stored["training"]["final_loss"] == record["metrics"]["final_loss"] is not None
    assert stored["training"]["config"]["learning_rate"] == 5e-2 and stored["kind"] == "sft"
    assert stored["command"] == record["command"] and "pytest" in stored["command"]  # the process's own line
    assert stored["code_revision"] == record["code_revision"]
    assert stored["metrics"] == {"val_average_reward": 0.25} and stored["trained_dtype"] == "float32"
    assert stored["files"]["adapter_model.safetensors"]["sha256"] == file_sha256(folder / "adapter_model.safetensors")
    assert stored["bytes"] == sum(f["bytes"] for f in stored["files"].values())

    # PEFT puts the float16 weights into float32 LoRA layers; the logits barely move, while the
    # adapter itself moves them far more.
    base_logits, _ = _logits(model, None)
    trained_logits, _ = _logits(model, out)
    shipped_logits, peft_model = _logits(model, folder)
    assert {p.dtype for n, p in peft_model.named_parameters() if "lora_" in n} == {torch.float32}
    rounding = float((shipped_logits - trained_logits).abs().max())
    effect = float((trained_logits - base_logits).abs().max())
    assert effect > 100 * rounding, (effect, rounding)


def test_a_shipped_adapter_plays_from_any_working_directory(trained, shipped_root, tmp_path, monkeypatch):
    from josh_core.llm.specs import build_backend

    model, _, out = trained
    ship_adapter(out, "tiny-sft")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert adapter_problem("shipped:tiny-sft") is None
    backend = build_backend(f"hf:{model}@shipped:tiny-sft", shared=False)
    assert backend.adapter == str(shipped_root / "tiny-sft") and backend.name == f"hf:{model}@shipped:tiny-sft"
    backend.load()  # the adapter merges into the model
    with pytest.raises(ValueError, match="no shipped adapter 'missing'"):
        build_backend(f"hf:{model}@shipped:missing", shared=False)
    with pytest.raises(ValueError, match="cannot name a shipped adapter"):
        build_backend(f"hf:{model}@shipped:../out", shared=False)


def test_ship_refuses_what_it_cannot_ship_and_writes_nothing(trained, shipped_root, tmp_path):
    model, _, out = trained
    ship_adapter(out, "first")
    with pytest.raises(ShippingError, match="exists already"):
        ship_adapter(out, "first")
    again = ship_adapter(out, "first", replace=True, note="again")
    assert again.note == "again" and verify_shipped().ok
    with pytest.raises(ShippingError, match="cannot name a shipped adapter"):
        ship_adapter(out, "../escape")
    one = sum(f.stat().st_size for f in shipped_root.rglob("*") if f.is_file())  # "first" alone
    with pytest.raises(ShippingError, match="over the .* MB limit"):
        ship_adapter(out, "second", limit_bytes=one + 100)
    assert sorted(p.name for p in shipped_root.iterdir()) == ["first"]  # no staging folder left
    # A folder PEFT could load but no JOSH training wrote (no josh_training.json), and an
    # unfinished training, are refused.
    import shutil

    foreign = tmp_path / "foreign"
    shutil.copytree(out, foreign)
    (foreign / MANIFEST_FILE).unlink()
    with pytest.raises(ShippingError, match="no record of a JOSH training"):
        ship_adapter(foreign, "foreign")
    (foreign / RESUME_FILE).write_text("{}")
    with pytest.raises(ShippingError, match="incomplete"):
        ship_adapter(foreign, "foreign")
    assert MAX_SHIPPED_BYTES == 20_000_000


def test_verify_finds_a_changed_byte_an_extra_file_and_the_cli_says_so(trained, shipped_root):
    _, _, out = trained
    runner = CliRunner()
    shipped = runner.invoke(app, ["adapters", "ship", str(out), "--name", "tiny", "--metric", "reward=0.5",
                                  "--command", "josh selftrain --experiment x"])
    assert shipped.exit_code == 0, shipped.output
    assert "shipped tiny" in shipped.output and "embedded@shipped:tiny" not in shipped.output  # an hf: base
    listed = runner.invoke(app, ["adapters", "list"])
    assert listed.exit_code == 0 and "tiny" in listed.output, listed.output
    (entry,) = json.loads(runner.invoke(app, ["adapters", "list", "--json"]).stdout)
    assert entry["name"] == "tiny" and entry["manifest"]["metrics"] == {"reward": 0.5}
    manifest = json.loads((shipped_root / "tiny" / SHIPPED_MANIFEST).read_text())
    assert manifest["command"] == "josh selftrain --experiment x"
    ok = runner.invoke(app, ["adapters", "verify"])
    assert ok.exit_code == 0 and "tiny: ok (base model: matches)" in ok.output, ok.output

    weights = shipped_root / "tiny" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    (shipped_root / "tiny" / "notes.txt").write_text("x")
    failed = runner.invoke(app, ["adapters", "verify", "--json"])
    assert failed.exit_code == 1
    result = json.loads(failed.stdout)
    assert result["ok"] is False
    assert result["adapters"][0]["problems"] == ["adapter_model.safetensors differs from its manifest (sha256 or size)",
                                                 "files the manifest does not list: notes.txt"]
    missing = runner.invoke(app, ["adapters", "verify", "nope"])
    assert missing.exit_code == 1 and "no shipped adapter 'nope'" in missing.output


def test_the_repositorys_shipped_adapters_match_their_manifests():
    """What the repository ships: every file as its manifest says, 20 MB in all at most."""
    report = verify_shipped(check_base=False)
    assert report.ok, report.model_dump()
    assert report.total_bytes <= MAX_SHIPPED_BYTES


def test_the_quickstart_plays_an_adapter_the_repository_ships():
    """The README's first command plays `embedded@shipped:NAME` by default: NAME must be here."""
    import re

    script = (Path(__file__).resolve().parents[1] / "scripts" / "quickstart.sh").read_text()
    default = re.search(r'JOSH_AGENT:-embedded@shipped:([\w.-]+)\}', script)
    assert default, "quickstart.sh no longer names its default agent as embedded@shipped:NAME"
    shipped = {entry.name for entry in list_shipped()}
    assert default.group(1) in shipped, (default.group(1), shipped)
    assert verify_shipped(names=[default.group(1)], check_base=False).ok
