"""Hostile input and faults around `josh train` and `josh selftrain`: non-finite settings, output
folders that are not ours or in use, unusable databases, oversized or undecodable data, disk
full, diverged and interrupted trainings. Every refusal is one line, before anything is changed.

Most cases are refused before a model loads. The cases that need a real training use a tiny
randomly initialised Llama (train_fixtures.tiny_model) so a step takes milliseconds.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardening_fixtures import JOSH, foreign_duckdb, invoke, no_traceback
from josh_core.adapter_folder import MANIFEST_FILE, RESUME_FILE, adapter_problem
from josh_core.storage import trainings
from josh_core.storage.db import Database
from train_fixtures import tiny_model, write_sft


def error_line(result) -> str:
    text = result.stderr if isinstance(result, subprocess.CompletedProcess) else result.output
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_args(data: Path, out: Path, db: Path, *extra: str) -> list[str]:
    return ["train", "--kind", "sft", "--data", str(data), "--out", str(out), "--db", str(db), *extra]


# -- 2. non-finite numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [["--lr", "inf"], ["--lr", "nan"], ["--lr", "-inf"], ["--epochs", "inf"]])
def test_non_finite_flags_are_refused_before_anything_is_written(tmp_path, flags):
    data = write_sft(tmp_path / "sft.jsonl")
    result = invoke(*train_args(data, tmp_path / "out", tmp_path / "t.duckdb", *flags))
    assert result.exit_code == 1 and no_traceback(result)
    assert "must be a finite number" in error_line(result)
    assert not (tmp_path / "out").exists() and not (tmp_path / "t.duckdb").exists()


@pytest.mark.parametrize("name, text", [
    ("c.json", '{"learning_rate": NaN}'),
    ("c.json", '{"sft": {"weight_decay": Infinity}}'),
    ("c.toml", "lora_dropout = inf\n"),
    ("c.toml", "[sft]\ntrl_args = { max_grad_norm = nan }\n"),
])
def test_non_finite_config_files_are_refused(tmp_path, name, text):
    data = write_sft(tmp_path / "sft.jsonl")
    (tmp_path / name).write_text(text)
    result = invoke(*train_args(data, tmp_path / "out", tmp_path / "t.duckdb", "--config", str(tmp_path / name)))
    assert result.exit_code == 1 and no_traceback(result)
    assert "must be a finite number" in error_line(result)
    assert not (tmp_path / "out").exists()


def test_config_values_are_checked_in_one_place():
    from josh_core.train import TrainingConfigError, build_config

    for kind, key in (("sft", "learning_rate"), ("kto", "beta"), ("dpo", "beta"), ("kto", "desirable_weight")):
        for bad in (float("inf"), float("nan"), float("-inf")):
            with pytest.raises(TrainingConfigError, match=f"{key} must be a finite number"):
                build_config(kind, None, {key: bad})
    assert build_config("sft", None, {"learning_rate": 1e-3}).learning_rate == 1e-3


# -- 8. selftrain checks everything before it stores anything ------------------------------------------


def stored_stages(db: Path, experiment: str) -> dict:
    from josh_core.storage import stages

    if not db.exists():
        return {}
    return stages.get_stages(Database(db), experiment)


@pytest.mark.parametrize("flags, message", [
    (["--set", "sft.learning_rate=Infinity"], "learning_rate must be a finite number"),
    (["--set", "sft.learning_rate=NaN"], "learning_rate must be a finite number"),
    (["--lr", "inf"], "learning_rate must be a finite number"),
    (["--set", "sft.no_such_setting=1"], "unknown sft setting"),
    (["--set", "kto.beta=0.2"], "kto is not trained by this experiment"),
    (["--set", "warmstart.learning_rate=-1"], "learning_rate must be a positive number"),
    (["--base", "openai:gpt-4o"], "cannot train"),
    (["--base", "hf:/no/such/model"], "no model folder"),
    (["--experiment", "../escaped"], "experiment: give one folder name"),  # its folder would climb out
])
def test_selftrain_refuses_bad_training_settings_before_storing_anything(tmp_path, flags, message):
    db = tmp_path / "exp.duckdb"
    result = invoke("selftrain", "--experiment", "e1", "--db", str(db), "--train-limit", "1", "--eval-limit", "1",
                    *flags)
    assert result.exit_code == 1 and no_traceback(result), result.output
    assert message in error_line(result)
    assert stored_stages(db, "e1") == {}
    assert not (tmp_path / "exp-selftrain").exists()


def test_selftrain_library_refuses_settings_of_a_kind_it_does_not_train(tmp_path):
    from josh_core.train import TrainingConfigError
    from josh_core.train.selftrain import Selftrain, SelftrainConfig

    config = SelftrainConfig(experiment="e2", kinds=["sft"], train_overrides={"kto": {"beta": 0.2}})
    with pytest.raises(TrainingConfigError, match="kto"):
        Selftrain(config, tmp_path / "exp.duckdb").run()
    assert stored_stages(tmp_path / "exp.duckdb", "e2") == {}


# -- 4. the output folder: ours, and one training at a time ------------------------------------------------


def test_a_folder_that_is_not_ours_is_refused_and_left_as_it_is(tmp_path):
    data = write_sft(tmp_path / "sft.jsonl")
    out = tmp_path / "someone-elses"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (out / "README.md").write_text("my notes")
    (out / "metrics.jsonl").write_text('{"mine": 1}\n')
    before = snapshot(out)
    result = invoke(*train_args(data, out, tmp_path / "t.duckdb"))
    assert result.exit_code == 1 and no_traceback(result)
    assert "is not empty and holds no JOSH training" in error_line(result)
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["README.md", "checkpoint-3",
                                                                                 "metrics.jsonl"]


@pytest.mark.parametrize("what", ["file", "database", "database-folder"])
def test_out_must_be_a_folder_other_than_the_database(tmp_path, what):
    data = write_sft(tmp_path / "sft.jsonl")
    db = tmp_path / "t.duckdb"
    Database(db).ensure_schema()
    out = {"file": data, "database": db, "database-folder": tmp_path}[what]
    before = db.read_bytes()
    result = invoke(*train_args(data, out, db))
    assert result.exit_code == 1 and no_traceback(result)
    assert "--out" in error_line(result)
    assert db.read_bytes() == before and data.read_text().count("\n") == 4


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from josh_core.train.guards import claim_output
with claim_output(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_folder_being_trained_into_is_refused(tmp_path):
    data = write_sft(tmp_path / "sft.jsonl")
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = invoke(*train_args(data, out, tmp_path / "t.duckdb"))
        assert result.exit_code == 1 and no_traceback(result)
        assert f"process {holder.pid}" in error_line(result) and "being trained into" in error_line(result)
        assert list(out.iterdir()) == []
    finally:
        holder.kill()
        holder.wait()
    from josh_core.train.guards import folder_in_use

    assert not folder_in_use(out)  # the kernel released the lock of the killed process


# -- 12. one-line errors for unusable input ------------------------------------------------------------


def test_unusable_training_data_is_one_line(tmp_path):
    db = tmp_path / "t.duckdb"
    cases = {
        "latin1.jsonl": '{"messages": [{"role": "assistant", "content": "caf\xe9"}]}\n'.encode("latin-1"),
        "deep.jsonl": ("[" * 100_000 + "]" * 100_000 + "\n").encode(),
        "deep-row.jsonl": ('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n").encode(),
    }
    expected = {"latin1.jsonl": "line 1 is not UTF-8", "deep.jsonl": "line 1 is nested too deeply",
                "deep-row.jsonl": "line 1 is nested too deeply"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        result = invoke(*train_args(tmp_path / name, tmp_path / "out", db))
        assert result.exit_code == 1 and no_traceback(result), (name, result.output)
        assert expected[name] in error_line(result) and name in error_line(result)
    assert not (tmp_path / "out").exists() and not db.exists()


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    data = write_sft(tmp_path / "sft.jsonl")
    (tmp_path / "c.toml").write_bytes(b"learning_rate = 1e-3 # \xff\xfe\n")
    result = invoke(*train_args(data, tmp_path / "out", tmp_path / "t.duckdb", "--config", str(tmp_path / "c.toml")))
    assert result.exit_code == 1 and no_traceback(result)
    assert "is not UTF-8" in error_line(result) and "c.toml" in error_line(result)


def test_a_base_model_that_is_missing_is_one_line(tmp_path):
    data = write_sft(tmp_path / "sft.jsonl")
    for base in ("hf:/missing", f"hf:{tmp_path}", f"embedded@{tmp_path / 'no-adapter'}"):
        result = invoke(*train_args(data, tmp_path / "out", tmp_path / "t.duckdb", "--base", base))
        assert result.exit_code == 1 and no_traceback(result), result.output
        assert "--base" in error_line(result)
    assert not (tmp_path / "out").exists()


def newer_schema(path: Path) -> Path:
    from josh_core.storage.schema import LATEST_VERSION

    Database(path).ensure_schema()
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', now())", [LATEST_VERSION + 1])
    con.close()
    return path


def truncated(path: Path, tmp_path: Path) -> Path:
    """A real database (a stored run: several DuckDB blocks) cut to half its length."""
    from hardening_fixtures import stored_run

    full, _ = stored_run(tmp_path / "full")
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("kind", ["newer", "text", "foreign", "truncated"])
def test_unusable_databases_are_refused_and_not_written(tmp_path, kind):
    data = write_sft(tmp_path / "sft.jsonl")
    db = tmp_path / "bad.duckdb"
    if kind == "newer":
        newer_schema(db)
    elif kind == "text":
        db.write_text("just some notes\n")
    elif kind == "foreign":
        foreign_duckdb(db)
    else:
        truncated(db, tmp_path)
    before = db.read_bytes()
    result = invoke(*train_args(data, tmp_path / "out", db))
    assert result.exit_code == 1 and no_traceback(result), result.output
    assert str(db) in error_line(result)
    assert db.read_bytes() == before and not (tmp_path / "out").exists()


def test_disk_full_while_preparing_the_training_is_one_line(tmp_path, monkeypatch):
    """ENOSPC injected at the first write into the output folder (the checkpoint marker)."""
    data = write_sft(tmp_path / "sft.jsonl")
    out = tmp_path / "out"
    real_write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if out in self.parents:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    result = invoke(*train_args(data, out, tmp_path / "t.duckdb", "--base", "embedded"))
    assert result.exit_code == 1 and no_traceback(result), result.output
    assert "no space left on the device writing" in error_line(result) and str(out) in error_line(result)


# -- 16. oversized lines are refused early ---------------------------------------------------------------


def test_a_huge_line_is_refused_at_the_cap_without_reading_it_whole(tmp_path):
    import tracemalloc

    from josh_core.train import TrainingDataError, load_training_data
    from josh_core.train.data import MAX_LINE_BYTES

    path = tmp_path / "huge.jsonl"
    with path.open("wb") as fh:
        fh.write((json.dumps({"messages": [{"role": "assistant", "content": "ok"}]}) + "\n").encode())
        fh.write(b'{"messages": [{"role": "assistant", "content": "' + b"x" * (50 * 1024 * 1024) + b'"}]}\n')
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(TrainingDataError, match=r"line 2 is longer than"):
        load_training_data(path, "sft")
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 10
    assert peak < 3 * MAX_LINE_BYTES  # the cap, not the 50 MB line, bounds what is held


def test_a_line_of_exactly_the_cap_is_read(tmp_path):
    from josh_core.train.data import read_lines

    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"a" * 10 + b"\n" + b"b" * 10)
    assert [text for _, text in read_lines(path, max_line_bytes=10)] == ["a" * 10 + "\n", "b" * 10]
    path.write_bytes(b"a" * 11 + b"\n")
    with pytest.raises(ValueError, match="line 1 is longer than 10 bytes"):
        list(read_lines(path, max_line_bytes=10))


# -- 13. interrupted trainings: the SPEC check and stale rows --------------------------------------------------


def test_an_unfinished_adapter_folder_is_refused_by_the_spec_check(tmp_path):
    from josh_core.launch import check_spec
    from josh_core.llm.specs import build_backend

    folder = tmp_path / "unfinished"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"half")
    (folder / RESUME_FILE).write_text("{}")
    assert "incomplete" in adapter_problem(folder)
    assert "incomplete" in check_spec(f"embedded@{folder}", "agent")[0]
    started = time.perf_counter()
    with pytest.raises(ValueError, match="incomplete"):
        build_backend(f"embedded@{folder}", shared=False)
    assert time.perf_counter() - started < 5  # refused before any model loads
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "adapter_config.json missing" in adapter_problem(empty)
    (folder / MANIFEST_FILE).write_text("{}")  # an old complete adapter with a new training running
    assert adapter_problem(folder) is None


def test_a_running_row_whose_process_is_gone_is_closed_at_the_next_start(tmp_path):
    from josh_core.train.guards import close_stale_trainings

    db = Database(tmp_path / "t.duckdb")
    gone = trainings.create_training(db, kind="sft", base="embedded", data_path="d", data_hash="h", examples=1,
                                     config={}, adapter_path=str(tmp_path / "gone"))
    busy_folder = tmp_path / "busy"
    busy = trainings.create_training(db, kind="sft", base="embedded", data_path="d", data_hash="h", examples=1,
                                     config={}, adapter_path=str(busy_folder.resolve()))
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(busy_folder)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert close_stale_trainings(db) == [gone]
    finally:
        holder.kill()
        holder.wait()
    row = trainings.get_training(db, gone)
    assert row.status == "failed" and "interrupted" in row.error
    assert trainings.get_training(db, busy).status == "running"


# -- real (tiny) trainings: divergence, disk full at save, a kill, the old adapter kept -----------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return tiny_model(folder / "model"), write_sft(folder / "sft.jsonl")


FAST = ["--max-steps", "1", "--config"]


def fast_config(folder: Path, **extra) -> Path:
    settings = {"max_length": 64, "gradient_accumulation_steps": 1, "warmup_steps": 0, "learning_rate": 1e-3,
                "lora_target_modules": ["q_proj", "v_proj"], **extra}
    path = folder / f"fast-{len(list(folder.glob('fast-*')))}.json"
    path.write_text(json.dumps(settings))
    return path


@pytest.mark.slow
def test_the_finished_adapter_survives_a_diverged_a_disk_full_and_a_killed_training(tmp_path, tiny, monkeypatch, capfd):
    model, data = tiny
    db = tmp_path / "t.duckdb"
    out = tmp_path / "adapter"
    base = f"hf:{model}"

    # A finished training (through the library, as `josh selftrain` trains): the adapter, its
    # manifest and metrics, no staging or marker left.
    from josh_core.train import train

    # Bars on, as in a process that never ran `josh train` (earlier tests may have turned them off):
    # the training itself must turn them off.
    import datasets
    import transformers

    for variable in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(variable, raising=False)
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()
    settings = json.loads(fast_config(tmp_path).read_text())
    first_id = train("sft", data, base, out, overrides={**settings, "max_steps": 1}, db=db).training_id
    assert adapter_problem(out) is None and not (out / RESUME_FILE).exists() and not (out / ".josh-partial").exists()
    assert json.loads((out / MANIFEST_FILE).read_text())["training_id"] == first_id
    assert (out / "metrics.jsonl").read_text().count("\n") >= 1
    kept = snapshot(out)
    # 17: no tqdm bar from the libraries among our own progress.
    captured = capfd.readouterr()
    assert "it/s]" not in captured.err + captured.out and "%|" not in captured.err + captured.out

    # 2: a learning rate finite in Python that overflows float32 weights: refused after training.
    diverged = invoke(*train_args(data, out, db, "--base", base, *FAST, str(fast_config(tmp_path, learning_rate=1e39))))
    assert diverged.exit_code == 1 and no_traceback(diverged), diverged.output
    assert "diverged" in error_line(diverged)

    # 12: the disk fills while the adapter is saved.
    import josh_core.train.runner as runner

    def save_fails(trainer, tokenizer, staging):
        (staging / "adapter_model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(staging / "adapter_model.safetensors"))

    monkeypatch.setattr(runner, "_save_adapter", save_fails)
    full = invoke(*train_args(data, out, db, "--base", base, *FAST, str(fast_config(tmp_path, seed=7))))
    monkeypatch.undo()
    assert full.exit_code == 1 and no_traceback(full), full.output
    assert "no space left on the device" in error_line(full)

    # The old adapter is still the complete one of the first training, byte for byte.
    assert {k: v for k, v in snapshot(out).items() if not k.startswith((".josh-partial", RESUME_FILE, "checkpoint-"))} \
        == kept
    assert adapter_problem(out) is None
    rows = {r.id: r for r in trainings.list_trainings(Database(db))}
    assert rows[first_id].status == "done"
    failed = [r for r in rows.values() if r.id != first_id]
    assert len(failed) == 2 and all(r.status == "failed" for r in failed)
    assert any("diverged" in (r.error or "") for r in failed) and any("No space" in (r.error or "") for r in failed)


@pytest.mark.slow
def test_a_training_killed_before_its_first_checkpoint_is_closed_at_the_next_start(tmp_path, tiny):
    """13: the kill leaves a 'running' row and a folder no SPEC accepts; the next training in
    the database closes the row as interrupted."""
    model, data = tiny
    db = tmp_path / "t.duckdb"
    base = f"hf:{model}"
    fresh = tmp_path / "killed"
    slow = fast_config(tmp_path, checkpoint_minutes=None)
    log_path = tmp_path / "child.log"
    with log_path.open("w") as log_file:
        child = subprocess.Popen(
            [*JOSH, *train_args(data, fresh, db, "--base", base, "--max-steps", "100000", "--config", str(slow))],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    running, problems = [], []
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and not running and child.poll() is None:
            time.sleep(2)
            try:
                running = [r for r in trainings.list_trainings(Database(db)) if r.status == "running"]
            except Exception as error:  # the child may hold the file for a moment
                problems.append(repr(error))
        assert running, (log_path.read_text()[-2000:], problems[-3:])
        time.sleep(2)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert "incomplete" in adapter_problem(fresh)  # no adapter to play, and it says why
    again = invoke(*train_args(data, tmp_path / "another", db, "--base", base, *FAST, str(fast_config(tmp_path))))
    assert again.exit_code == 0, again.output
    killed_row = trainings.get_training(Database(db), running[0].id)
    assert killed_row.status == "failed" and "interrupted" in killed_row.error


class Interrupted(Exception):
    pass


def stop_after_saving(step: int):
    """Ends the training right after the checkpoint of `step` is written, as a kill then would."""
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupted(f"stopped after saving step {step}")

    return StopAfterSave()


@pytest.mark.slow
def test_an_interrupted_retraining_keeps_the_old_adapter_playable_and_then_resumes(tmp_path, tiny):
    """4 and 13: our own training resumes into its folder; until it finishes, the folder holds
    the previous complete adapter with its own metrics, never a mix."""
    from josh_core.train import train
    from josh_core.train.runner import run_training

    model, data = tiny
    base, out = f"hf:{model}", tmp_path / "adapter"
    settings = {**json.loads(fast_config(tmp_path).read_text()), "max_steps": 3, "checkpoint_minutes": 0}
    old = train("sft", data, base, out, overrides={**settings, "max_steps": 1})
    kept = snapshot(out)

    changed = {**settings, "seed": 3}
    with pytest.raises(Interrupted):
        run_training("sft", data, base, out, overrides=changed, callbacks=[lambda: stop_after_saving(2)])
    assert (out / "checkpoint-2").is_dir() and (out / RESUME_FILE).is_file()
    assert {k: v for k, v in snapshot(out).items() if not k.startswith((".josh-partial", RESUME_FILE, "checkpoint-"))} \
        == kept  # the old adapter, manifest and metrics, untouched
    assert adapter_problem(out) is None
    assert json.loads((out / MANIFEST_FILE).read_text())["training_id"] == old.training_id

    resumed = train("sft", data, base, out, overrides=changed)
    assert resumed.resumed_from_step == 2 and resumed.steps == 3
    assert json.loads((out / MANIFEST_FILE).read_text())["training_id"] == resumed.training_id
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3]
    assert not list(out.glob("checkpoint-*")) and not (out / RESUME_FILE).exists()
    assert not (out / ".josh-partial").exists() and adapter_problem(out) is None
