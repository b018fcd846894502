"""A training run folder (`asd train --out`): one writer at a time, resumed only if the same run.

A run folder holds ``config.json``, ``run.json`` (config and data fingerprint),
``checkpoints/last.pt``, ``encoder.pt`` and ``history.csv``. Training into a folder that
already holds a run resumes it only when the config *and* the data fingerprint match: an
encoder trained on other data but saved under the new fingerprint would mislead promotion.
Anything else is refused before a byte is written; ``overwrite`` replaces the old run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from asd.errors import AsdError

MODES = ("auto", "resume", "overwrite")
"""auto: resume a matching run, start an empty folder, refuse the rest; resume: a matching
run must be there; overwrite: remove whatever run is there and start again."""

RECORD = "run.json"
_RUN_FILES = ("config.json", RECORD, "encoder.pt", "history.csv", "checkpoints")
_CHECKPOINT = Path("checkpoints") / "last.pt"
_OWN_FILES = (".lock", "config.json", RECORD)
"""What the run folder itself writes before training starts."""


@contextlib.contextmanager
def run_folder(
    out: Path, flat_config: dict[str, Any], data_fingerprint: str, mode: str = "auto"
) -> Iterator[bool]:
    """Lock ``out``, check what it holds against this run, yield whether training resumes.

    The lock (``flock`` on ``out/.lock``) is held until the block ends, so a second
    ``asd train`` into the same folder is refused instead of racing on the checkpoint.
    ``config.json`` and ``run.json`` are written only after every check passed.
    """
    if mode not in MODES:
        raise AsdError(f"unknown run-folder mode '{mode}' (known: {', '.join(MODES)})")
    if out.exists() and not out.is_dir():
        raise AsdError(f"--out {out} is a file, not a run folder")
    created = _missing_folders(out)
    had = {name for name in _OWN_FILES if (out / name).exists()}
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(out, flat_config, data_fingerprint, mode) as resume:
            yield resume
    except AsdError:
        _undo(out, created, had)
        raise


def _missing_folders(out: Path) -> list[Path]:
    """The folders ``out.mkdir(parents=True)`` will create, deepest first."""
    missing = []
    while not out.exists() and out != out.parent:
        missing.append(out)
        out = out.parent
    return missing


def _undo(out: Path, created: list[Path], had: set[str]) -> None:
    """After a refused run, remove what this run wrote, unless it left a checkpoint to resume.

    A refusal (hop longer than a clip, an impossible setting, another run in the folder)
    must leave the folder as it found it; a run that trained an epoch keeps its checkpoint.
    """
    if (out / _CHECKPOINT).exists():
        return
    if created:
        shutil.rmtree(created[-1], ignore_errors=True)
        return
    for name in set(_OWN_FILES) - had:
        (out / name).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(
    out: Path, flat_config: dict[str, Any], data_fingerprint: str, mode: str
) -> Iterator[bool]:
    """:func:`run_folder`'s lock, checks and records around the block."""
    with open(out / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise AsdError(
                f"run folder {out} is in use by another asd train ({holder}): wait for it "
                "or choose another --out"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        resume = _check(out, flat_config, data_fingerprint, mode)
        (out / "config.json").write_text(json.dumps(flat_config, indent=2))
        record = {"config": flat_config, "data_fingerprint": data_fingerprint}
        (out / RECORD).write_text(json.dumps(record, indent=2))
        yield resume


def _check(out: Path, flat_config: dict[str, Any], data_fingerprint: str, mode: str) -> bool:
    """Whether to resume; AsdError when ``out`` holds another run (nothing written yet)."""
    existing = [name for name in _RUN_FILES if (out / name).exists()]
    if mode == "overwrite":
        for name in existing:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return False
    if not existing:
        if mode == "resume":
            raise AsdError(f"--resume: nothing to resume in {out} (no run there)")
        return False
    why = _differences(out, flat_config, data_fingerprint)
    if why:
        raise AsdError(
            f"run folder {out} holds another run ({why}): pass --overwrite to replace it, "
            "or choose another --out"
        )
    if mode == "resume" and not (out / _CHECKPOINT).is_file():
        raise AsdError(f"--resume: {out} has no checkpoint ({_CHECKPOINT}) to resume from")
    return True


def _differences(out: Path, flat_config: dict[str, Any], data_fingerprint: str) -> str:
    """What differs between the run in ``out`` and this one ('' when it is the same run)."""
    try:
        record = json.loads((out / RECORD).read_text())
        saved, saved_fp = dict(record["config"]), str(record["data_fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {RECORD}, so its data cannot be checked"
    parts = []
    keys = sorted(k for k in set(saved) | set(flat_config) if saved.get(k) != flat_config.get(k))
    if keys:
        parts.append(f"config differs in {', '.join(keys)}")
    if saved_fp != data_fingerprint:
        parts.append(f"trained on other data: fingerprint {saved_fp}, now {data_fingerprint}")
    return "; ".join(parts)
