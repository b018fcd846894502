"""Folders that appear only when complete: written under a ``.tmp-*`` name, renamed into place.

A killed writer (SIGKILL, SIGTERM, a lost node) leaves its ``.tmp-*`` folder behind; the
next writer in the same parent removes those whose process is gone (same host, dead pid) or
that nobody touched for hours (another host's, whose pid cannot be checked from here).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

from asd.errors import AsdError

log = logging.getLogger(__name__)

HOST = socket.gethostname().replace("-", "_")
"""This host, as it appears in temporary folder names (no '-': the name's separator)."""

STALE_AFTER_S = 6 * 3600.0
"""A temporary folder of another host untouched this long belongs to a dead writer."""


def check_writable(target: Path, flag: str) -> None:
    """AsdError (one line naming ``flag``) unless ``target`` can be created or written.

    Called before the work, so a wrong ``--out`` costs nothing: the nearest existing folder
    above ``target`` must be a folder and must take a file (tried, not guessed from modes:
    root, read-only mounts and ACLs all answer differently).
    """
    probe = target if target.is_dir() else target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise AsdError(f"{flag} {target}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        why = exc.strerror or exc
        raise AsdError(f"{flag} {target}: cannot write in {probe} ({why})") from None


def tmp_folder(parent: Path, label: str) -> Path:
    """A new, empty ``<parent>/.tmp-<label>-<host>-<pid>-<random>`` folder."""
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent)
    tmp = parent / f".tmp-{label.replace('-', '_')}-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def remove_stale(parent: Path) -> None:
    """Delete ``.tmp-*`` folders in ``parent`` whose writer is gone."""
    for tmp in parent.glob(".tmp-*"):
        parts = tmp.name.split("-")  # .tmp-<label>-<host>-<pid>-<random>
        try:
            host, pid = parts[2], int(parts[3])
            newest = max([tmp.stat().st_mtime] + [f.stat().st_mtime for f in tmp.iterdir()])
        except (IndexError, ValueError, OSError):
            host, pid, newest = "", -1, 0.0
        dead = host == HOST and not pid_alive(pid)
        if dead or time.time() - newest > STALE_AFTER_S:
            log.info("removing %s left by a killed writer", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def publish(tmp: Path, target: Path) -> None:
    """Move everything in ``tmp`` into ``target`` (replacing same-named entries), drop ``tmp``.

    Used for outputs a failed command must not leave half written: they are made in ``tmp``
    and published only once the whole command succeeded.
    """
    target.mkdir(parents=True, exist_ok=True)
    for entry in tmp.iterdir():
        dest = target / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.replace(entry, dest)
    tmp.rmdir()
