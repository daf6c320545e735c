"""Training throughput: SFT and KTO tokens per second on the same data, settings side by side.

The data are real `josh export` files (TRL format) of small JOSH trees played by script policies
in the toy environment of tests/train_fixtures.py. Each arm trains the embedded model's LoRA
adapter for --steps optimiser steps with `josh_core.train.train` (the function `josh train`
calls); tokens are the input tokens of the rows the steps consumed. The roofline: a LoRA step
costs about 4 x parameters FLOPs per token (forward 2, backward through the frozen weights 2;
the adapters' own gradients are small), against the measured matmul GFLOP/s.

Arms (--arms): threads1 (the default: all cores but one = 1 here), threads2.

Usage:
  python bench/bench_train.py [--steps 4] [--arms threads1,threads2]
Writes bench/results/train_speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

RESULTS = ROOT / "bench" / "results"
ARMS = {"threads1": {"JOSH_TORCH_THREADS": "1"}, "threads2": {"JOSH_TORCH_THREADS": "2"}}


def row_tokens(kind: str, path: Path, tokenizer) -> list[int]:
    from josh_core.train.sft import tokenize_conversation

    counts = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else row.get("tools")
        if kind == "sft":
            counts.append(len(tokenize_conversation(tokenizer, row["messages"], tools)["input_ids"]))
        else:
            text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tools=tools, tokenize=False)
            counts.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--arms", default="threads1,threads2")
    args = parser.parse_args()
    import torch

    from bench.profile_player import matmul_gflops
    from josh_core.llm.embedded import embedded_model_dir
    from josh_core.train import train
    from train_fixtures import build_exports
    from transformers import AutoTokenizer

    load_start = os.getloadavg()[0]
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_exports(Path(tmp) / "data")
        for kind in ("sft", "kto"):
            counts = row_tokens(kind, paths[kind], tokenizer)
            for arm in args.arms.split(","):
                os.environ.update(ARMS[arm])
                overrides = {"max_steps": args.steps, "checkpoint_minutes": None, "gradient_accumulation_steps": 2}
                stamps: list[float] = []

                def on_log(entry: dict, stamps=stamps) -> None:
                    if "loss" in entry:
                        stamps.append(time.perf_counter())

                start = time.perf_counter()
                result = train(kind, paths[kind], "embedded", Path(tmp) / f"{kind}-{arm}", overrides=overrides,
                               on_log=on_log)
                wall = time.perf_counter() - start
                batch = 1 if kind == "sft" else 2
                # Steps after the first (model load, dataset preparation and warm-up excluded).
                steps = len(stamps) - 1
                seconds = stamps[-1] - stamps[0] if steps > 0 else wall
                rows = max(1, steps) * 2 * batch
                # KTO also runs its KL rows (as many again) through the model.
                tokens = sum(counts[i % len(counts)] for i in range(rows)) * (1 if kind == "sft" else 2)
                gflops = matmul_gflops(int(ARMS[arm]["JOSH_TORCH_THREADS"]), 512, 576, 1536)
                results.append((kind, arm, seconds, tokens, gflops, wall))
                print(kind, arm, f"{seconds:.1f} s", tokens, "tokens", f"{tokens / seconds:.1f} tok/s", flush=True)
                del result
    lines = [
        "# Training throughput (LoRA on the embedded model)",
        "",
        f"`python bench/bench_train.py --steps {args.steps} --arms {args.arms}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other work, torch {torch.__version__}; load average {load_start:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end.",
        "Data: the exports of tests/train_fixtures.py (rows of a few hundred tokens); each arm "
        f"{args.steps} optimiser steps of 2 accumulated batches (SFT batch 1, KTO batch 2, KTO's KL rows as many again); "
        "tok/s over the steps after the first (from the training's own log callbacks).",
        "",
        "| kind | arm | wall s (with load) | timed steps s | tokens in timed steps | tok/s | matmul GFLOP/s ([512x576]x[576x1536]) | roofline tok/s (4 x 135M FLOPs/token) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, arm, seconds, tokens, gflops, wall in results:
        lines.append(f"| {kind} | {arm} | {wall:.1f} | {seconds:.1f} | {tokens} | {tokens / seconds:.1f} | {gflops:.1f} | "
                     f"{gflops / (4 * 0.135):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_speed.md").write_text(text)


if __name__ == "__main__":
    main()
