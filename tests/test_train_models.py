"""Real optimisation steps on CPU with the embedded model (SmolLM2-135M) for SFT, KTO and DPO,
on real `josh export` files: the loss is finite and moves, the adapter is saved with its
record, loads as an agent (`embedded@DIR`) and plays a rollout, the `trainings` row is stored,
and an adapter is trained further (round k from round k-1).

Kept small: two steps each, sequences cut at 64 tokens, no gradient accumulation, a learning
rate large enough for two steps to move the weights (the defaults are checked elsewhere).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from josh_core.cli import app
from josh_core.storage import trainings
from josh_core.storage.db import Database
from josh_core.train import train
from train_fixtures import build_exports

pytestmark = pytest.mark.slow

SMOKE = {"max_steps": 2, "max_length": 64, "gradient_accumulation_steps": 1, "warmup_steps": 0,
         "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def exports(folder):
    return build_exports(folder / "exports")


@pytest.fixture(scope="module")
def db_path(folder):
    return folder / "trainings.duckdb"


@pytest.fixture(scope="module")
def sft_run(folder, exports, db_path):
    """SFT through the CLI (config file + flags), as a user runs it; returns its JSON result."""
    config = folder / "smoke.toml"
    config.write_text("max_length = 64\ngradient_accumulation_steps = 1\nwarmup_steps = 0\n"
                      "learning_rate = 1e-3\n")
    result = CliRunner().invoke(app, [
        "train", "--kind", "sft", "--data", str(exports["sft"]), "--base", "embedded",
        "--out", str(folder / "sft"), "--config", str(config), "--max-steps", "2", "--db", str(db_path), "--json",
    ])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kto_run(folder, exports, db_path):
    logs = []
    result = train("kto", exports["kto"], "embedded", folder / "kto", overrides={**SMOKE, "balance_weights": True},
                   db=db_path, on_log=logs.append)
    return result, logs


@pytest.fixture(scope="module")
def dpo_run(folder, exports, db_path):
    return train("dpo", exports["dpo"], "embedded", folder / "dpo", overrides=SMOKE, db=db_path)


def lora_weights(adapter_dir):
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def check_training(result: dict, kind: str, db_path, examples: int, steps: int = 2):
    adapter = result["adapter_dir"]
    assert result["kind"] == kind and result["status"] == "done" and result["examples"] == examples
    assert result["steps"] == steps and len(result["losses"]) == steps
    assert all(math.isfinite(loss) for loss in result["losses"])
    assert len(set(result["losses"])) == steps  # the loss moves from step to step
    assert result["final_loss"] == result["losses"][-1]

    adapter = Path(adapter)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "tokenizer.json").is_file() and not (adapter / "ref").exists()
    # LoRA B starts at zero: non-zero B matrices mean the optimiser really moved the adapter.
    weights = lora_weights(adapter)
    assert any(float(t.abs().max()) > 0 for name, t in weights.items() if "lora_B" in name)

    record = json.loads((adapter / "josh_training.json").read_text())
    assert record["training_id"] == result["training_id"] and record["kind"] == kind
    assert record["base"] == result["base"] and record["base_model"] == result["base_model"]
    assert record["data"]["sha256"] == result["data_hash"] and record["data"]["examples"] == examples
    assert record["metrics"]["losses"] == result["losses"] and record["config"]["max_steps"] == steps
    metrics = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in metrics if "loss" in m] == result["losses"]

    row = trainings.get_training(Database(db_path), result["training_id"])
    assert (row.status, row.kind, row.base, row.examples) == ("done", kind, result["base"], examples)
    assert row.data_hash == result["data_hash"] and row.adapter_path == str(adapter)
    assert row.losses == result["losses"] and row.seconds > 0 and row.error is None
    assert row.config["max_length"] == 64
    return record


def test_sft_cli_trains_on_the_assistant_tokens(sft_run, db_path):
    record = check_training(sft_run, "sft", db_path, examples=3)
    assert record["config"]["lora_r"] == 8 and record["continued_from"] is None


def test_kto_trains_with_balanced_weights_and_streams_logs(kto_run, db_path):
    result, logs = kto_run
    record = check_training(result.model_dump(), "kto", db_path, examples=30)
    # 15 desirable, 15 undesirable rows: weighted ratio 7/6, inside TRL's [1, 4/3].
    assert record["config"]["desirable_weight"] == 1.0
    assert record["config"]["undesirable_weight"] == pytest.approx(6 / 7, abs=1e-4)
    assert json.loads(Path(result.adapter_dir, "adapter_config.json").read_text())["r"] == 64  # KTO's default
    assert [log["loss"] for log in logs if "loss" in log] == result.losses
    assert all(log["max_steps"] == 2 for log in logs)


def test_dpo_trains(dpo_run, db_path):
    check_training(dpo_run.model_dump(), "dpo", db_path, examples=9)
    # Step 1: the policy is the reference (fresh adapter), so the DPO loss is exactly ln 2.
    assert dpo_run.losses[0] == pytest.approx(math.log(2), abs=1e-5)


def test_sft_masks_everything_but_the_assistant_turns(exports):
    from transformers import AutoTokenizer

    from josh_core.llm.embedded import embedded_model_dir
    from josh_core.train.sft import tokenize_conversation

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    messages = json.loads(exports["sft"].read_text().splitlines()[0])["messages"]
    encoded = tokenize_conversation(tokenizer, messages)
    # The same tokens inference renders, and the loss sees exactly the assistant messages
    # with their end-of-turn token.
    assert encoded["input_ids"] == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    learned = tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m])
    assert learned == "".join(m["content"] + "<|im_end|>\n" for m in messages if m["role"] == "assistant")


def test_continuing_an_adapter_trains_it_further(folder, exports, db_path, sft_run):
    sft_dir = sft_run["adapter_dir"]
    result = train("dpo", exports["dpo"], f"embedded@{sft_dir}", folder / "sft-then-dpo",
                   overrides={**SMOKE, "max_steps": 1, "lora_r": 4}, db=db_path)
    record = check_training(result.model_dump(), "dpo", db_path, examples=9, steps=1)
    assert record["continued_from"] == sft_dir and result.base == f"embedded@{sft_dir}"
    # The SFT adapter (r=8) was continued: lora_r=4 of a fresh adapter does not apply.
    assert json.loads((Path(result.adapter_dir) / "adapter_config.json").read_text())["r"] == 8
    # The reference is the continued adapter itself (a frozen copy), so step 1 is at ln 2.
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-5)
    before, after = lora_weights(Path(sft_dir)), lora_weights(Path(result.adapter_dir))
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before)


def test_trained_adapters_load_as_agents_and_play(folder, sft_run, kto_run, dpo_run, toolwoz_data):
    import torch

    from josh_core.llm.embedded import embedded_model_dir
    from josh_core.llm.hf_backend import HFBackend
    from josh_core.rollout import RolloutConfig, start_run
    from josh_core.storage import reads
    from josh_core.envs.toolwoz.scenarios import load_split

    base = HFBackend(embedded_model_dir()).model.state_dict()
    for adapter in (sft_run["adapter_dir"], kto_run[0].adapter_dir, dpo_run.adapter_dir):
        merged = HFBackend(embedded_model_dir(), adapter).model.state_dict()
        assert any(not torch.equal(base[k], merged[k]) for k in base if "q_proj" in k), adapter

    scenarios = load_split("train", limit=1)
    config = RolloutConfig(agent=f"embedded@{dpo_run.adapter_dir}", user="agenda", max_turns=1, seed=0)
    db_path = folder / "rollout.duckdb"
    run = start_run(db_path, scenarios, config)
    [conversation] = run.conversations
    assert conversation.status == "done", conversation.error
    tree = reads.load_tree(Database(db_path), conversation.conversation_id)
    agent_nodes = [n for n in tree.nodes.values() if n.kind == "agent"]
    assert agent_nodes and agent_nodes[0].generations
    assert reads.get_run(Database(db_path), run.run_id).agent_spec == f"embedded@{dpo_run.adapter_dir}"


class Interrupted(Exception):
    pass


def stop_after_saving(step: int):
    """A callback that ends the training right after the checkpoint of `step` is written, as a
    kill at that moment would."""
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupted(f"stopped after saving step {step}")

    return StopAfterSave()


def test_an_interrupted_training_resumes_from_its_checkpoint(folder, exports, db_path):
    from josh_core.train import checkpoints
    from josh_core.train.runner import run_training

    settings = {**SMOKE, "max_steps": 3, "checkpoint_minutes": 0}
    straight = train("sft", exports["sft"], "embedded", folder / "straight", overrides=settings)
    assert straight.resumed_from_step is None and straight.steps == 3
    assert not list((folder / "straight").glob("checkpoint-*"))  # removed once the adapter is saved

    out = folder / "interrupted"
    with pytest.raises(Interrupted):
        run_training("sft", exports["sft"], "embedded", out, overrides=settings, db=db_path,
                     callbacks=[lambda: stop_after_saving(2)])
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert [c.name for c in out.glob("checkpoint-*")] == ["checkpoint-2"]  # older ones are removed
    first_id = json.loads((out / checkpoints.RESUME_FILE).read_text())["training_id"]

    resumed = train("sft", exports["sft"], "embedded", out, overrides=settings, db=db_path)
    assert resumed.resumed_from_step == 2 and resumed.steps == 3
    # Steps 1-2 come from the first attempt's log, step 3 was trained on from the checkpoint
    # (optimizer, scheduler and RNG restored): the same losses as the uninterrupted training.
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-4)
    after, reference = lora_weights(out), lora_weights(folder / "straight")
    assert all(torch_close(after[k], reference[k]) for k in reference)
    assert not list(out.glob("checkpoint-*")) and not (out / checkpoints.RESUME_FILE).exists()
    interrupted_row = trainings.get_training(Database(db_path), first_id)
    assert interrupted_row.status == "failed" and resumed.training_id in interrupted_row.error

    # A different training into the same folder does not pick up another's checkpoint.
    with pytest.raises(Interrupted):
        run_training("sft", exports["sft"], "embedded", out, overrides=settings,
                     callbacks=[lambda: stop_after_saving(1)])
    other = train("sft", exports["sft"], "embedded", out, overrides={**settings, "learning_rate": 5e-4})
    assert other.resumed_from_step is None and other.steps == 3


def torch_close(a, b) -> bool:
    import torch

    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-6))
