"""Real `josh export` files for the training tests: small JOSH trees played by script policies
in the toy environment of engine_fixtures (system prompt "SYS", so rows are a few hundred
tokens), stored in DuckDB and exported with the function `josh export` calls."""

from __future__ import annotations

from pathlib import Path

from engine_fixtures import ToyEnv, call, speak, store_conversations, user
from josh_core.extract import ExportOptions, export_dataset
from josh_core.policies.script import ScriptAgent
from josh_core.storage.db import Database

GOALS = [("search_hotel", {"area": "north"}), ("book_hotel", {"name": "x"})]


def hotel_agent(variant: int) -> ScriptAgent:
    """Two goals in three turns; every turn has a good and a bad alternative (JOSH keeps both
    in the tree, so KTO gets undesirable rows and DPO gets pairs)."""
    return ScriptAgent(
        [
            [[speak(f"Hello {variant}, how can I help?")], [speak(f"Hi {variant}.")]],
            [[call("search_hotel", area="south"), speak("One in the south.")],
             [call("search_hotel", area="north"), speak(f"The Acorn {variant} is in the north.")]],
            [[call("book_hotel", name="x"), speak(f"Booked, reference {variant}.")],
             [call("bogus"), speak("Sorry.")]],
        ]
    )


def build_exports(folder: Path) -> dict[str, Path]:
    """A database with three JOSH conversations and its SFT / KTO / DPO exports (TRL format)."""
    folder.mkdir(parents=True, exist_ok=True)
    db = Database(folder / "rollouts.duckdb")
    store_conversations(
        db, [(hotel_agent(i), user(prefix=f"guest {i} says"), ToyEnv(GOALS), None) for i in range(3)]
    )
    paths = {}
    for kind in ("sft", "kto", "dpo"):
        paths[kind] = folder / f"{kind}.jsonl"
        summary = export_dataset(db, ExportOptions(kind=kind, format="trl"), paths[kind])
        assert summary.rows > 0, kind
    return paths


SFT_ROW = {"messages": [
    {"role": "system", "content": "SYS"},
    {"role": "user", "content": "I need a hotel in the north."},
    {"role": "assistant", "content": "The Acorn is in the north."},
]}


def write_sft(path: Path, rows: int = 4) -> Path:
    """A small SFT file written by hand (no rollout needed), one row per line."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(SFT_ROW) + "\n" for _ in range(rows)), encoding="utf-8")
    return path


def tiny_model(folder: Path) -> Path:
    """A randomly initialised one-layer Llama with the embedded model's tokenizer and chat
    template, saved as a transformers folder: a real model to train (`--base hf:FOLDER`) whose
    steps take milliseconds, for the tests of what happens around a training."""
    import shutil

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, set_seed

    from josh_core.llm.embedded import embedded_model_dir

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    source = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    set_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    for extra in ("chat_template.jinja",):
        if (source / extra).is_file() and not (folder / extra).is_file():
            shutil.copy(source / extra, folder / extra)
    return folder
