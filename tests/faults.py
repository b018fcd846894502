"""Epoch hooks that inject faults into sweep trials (``asd sweep --epoch-hook faults:<name>``).

They run inside Ray workers, so the tests put this folder on ``PYTHONPATH`` before Ray starts.
A hook is called as ``hook(trial_id, epoch, trial_dir)`` at the start of each epoch's report.
State lives in files under ``$ASD_FAULTS_DIR`` (set before Ray starts, so workers inherit it;
``trial_dir`` is Tune's local staging folder, not the sweep's storage), created with ``O_EXCL``
so concurrent trials and retried attempts agree on who does what:

- ``roles``: the test writes one role per line; each trial claims the next free role the first
  time it reports (``role-<n>`` holds the trial id). Roles: ``raise_once`` (raise at epoch 1 of
  the first attempt only), ``always_raise`` (raise at epoch 1 of every attempt), ``kill_once``
  (SIGKILL the worker at the start of epoch 2, once: epoch 1's checkpoint is already reported),
  ``normal``. A trial that finds no free role is normal.
- ``server.pid``: for :func:`kill_server`, the process group to SIGKILL at the first report.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _faults(trial_dir: str) -> Path:
    return Path(os.environ["ASD_FAULTS_DIR"])


def _once(path: Path, content: str = "") -> bool:
    """Create ``path``; True for the one caller that created it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    return True


def role_of(faults: Path, trial_id: str) -> str:
    """The role this trial claimed (claiming the next free one on its first call)."""
    roles = (faults / "roles").read_text().split()
    for n in range(len(roles)):
        claim = faults / f"role-{n}"
        if claim.exists() and claim.read_text() == trial_id:
            return roles[n]
    for n in range(len(roles)):
        if _once(faults / f"role-{n}", trial_id):
            return roles[n]
    return "normal"


def by_role(trial_id: str, epoch: int, trial_dir: str) -> None:
    """Inject the fault of the role this trial claimed."""
    faults = _faults(trial_dir)
    role = role_of(faults, trial_id)
    (faults / f"seen-{trial_id}-{epoch}-{os.getpid()}").touch()
    if role == "raise_once" and epoch == 1 and _once(faults / f"fired-{trial_id}"):
        raise RuntimeError(f"injected fault: raise once in {trial_id}")
    if role == "always_raise" and epoch == 1:
        raise RuntimeError(f"injected fault: always raise in {trial_id}")
    if role == "kill_once" and epoch == 2 and _once(faults / f"fired-{trial_id}"):
        os.kill(os.getpid(), signal.SIGKILL)


def kill_server(trial_id: str, epoch: int, trial_dir: str) -> None:
    """SIGKILL the MLflow server's process group at the first report of the sweep."""
    faults = _faults(trial_dir)
    if _once(faults / "server-killed", trial_id):
        pgid = int((faults / "server.pid").read_text())
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
