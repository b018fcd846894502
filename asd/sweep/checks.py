"""Checks a sweep passes before anything starts: counts, name, space identity, cluster size.

Each refusal is one line naming the flag or file, raised before the MLflow parent run and
before Tune, so a refused sweep leaves nothing RUNNING and never waits forever for
resources the cluster does not have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asd.errors import AsdError
from asd.tracking.uri import check_tracking_uri

if TYPE_CHECKING:
    import pandas as pd

    from asd.sweep.settings import SweepSettings

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME = 128
"""Longest sweep name: it becomes folder and file names (255 bytes at most on most systems)."""


def check_settings(settings: SweepSettings) -> None:
    """Counts and names a sweep could not run with (before any file or run is made)."""
    s = settings
    cpus, gpus = float(s.cpus_per_trial or 0.0), float(s.gpus_per_trial or 0.0)  # filled by now
    counts = [
        ("--num-samples", s.num_samples, s.num_samples is None or s.num_samples >= 1, ">= 1"),
        (
            "--max-concurrent",
            s.max_concurrent_trials,
            s.max_concurrent_trials is None or s.max_concurrent_trials >= 1,
            ">= 1",
        ),
        ("--cpus-per-trial", s.cpus_per_trial, cpus > 0, "> 0"),
        ("--gpus-per-trial", s.gpus_per_trial, gpus >= 0, ">= 0"),
        ("--max-failures", s.max_failures, s.max_failures >= 0, ">= 0"),
        ("--validate-every", s.validate_every, (s.validate_every or 0) >= 0, ">= 0"),
        ("--checkpoint-every", s.checkpoint_every, (s.checkpoint_every or 0) >= 0, ">= 0"),
    ]
    for flag, value, ok, rule in counts:
        if not ok:
            raise AsdError(f"{flag} {value}: must be {rule}")
    if s.name is not None:
        check_name(s.name)
    if s.tracking_uri:
        check_tracking_uri(s.tracking_uri)


def check_name(name: str) -> None:
    """A sweep name becomes folder and database names: letters, digits, '.', '_', '-' only."""
    if len(name) > MAX_NAME:
        raise AsdError(
            f"--name is {len(name)} characters long: a sweep name has at most {MAX_NAME}"
        )
    if not _NAME.match(name) or ".." in name:
        raise AsdError(
            f"--name {name!r}: a sweep name is letters, digits, '.', '_' and '-' "
            "(no path separators, no '..')"
        )


# --------------------------------------------------------------------------- space identity


def space_digest(path: Path) -> str:
    """SHA-256 of the space file's bytes."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise AsdError(f"cannot read search space {path}: {exc.strerror}") from None


def record_path(storage: Path, name: str) -> Path:
    """Where a sweep keeps the identity of its search space."""
    return storage / f"{name}.space.json"


def remember_space(storage: Path, name: str, space: Path) -> None:
    """Store the space's path and content hash beside the sweep (a resume checks them)."""
    storage.mkdir(parents=True, exist_ok=True)
    record = {"space": str(Path(space).resolve()), "sha256": space_digest(space)}
    record_path(storage, name).write_text(json.dumps(record, indent=1))


def check_same_space(storage: Path, name: str, space: Path) -> None:
    """Refuse to resume sweep ``name`` with another search space, naming both files."""
    path = record_path(storage, name)
    try:
        record = json.loads(path.read_text())
        started, digest = str(record["space"]), str(record["sha256"])
    except FileNotFoundError:
        log.warning("sweep '%s' has no %s: cannot check its search space", name, path.name)
        return
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AsdError(f"cannot read {path}: {exc}") from None
    if space_digest(space) != digest:
        raise AsdError(
            f"sweep '{name}' was started with search space {started} (sha256 {digest[:12]}), "
            f"but --space {space} differs: resume it with --space {started}"
        )


# --------------------------------------------------------------------------- cluster size


def check_resources(settings: SweepSettings, workers: int) -> None:
    """Refuse trials no node of the Ray cluster can hold: Tune would keep them PENDING forever."""
    import ray

    nodes: list[dict[str, Any]] = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = [float(n.get("CPU", 0)) for n in nodes] or [0.0]
    gpus = [float(n.get("GPU", 0)) for n in nodes] or [0.0]
    trial_cpus = float(settings.cpus_per_trial or 1.0)  # filled from the space by now
    trial_gpus = float(settings.gpus_per_trial or 0.0)
    use_gpu = trial_gpus > 0
    # One bundle per Ray Train worker, or the trial itself with k = 1.
    bundle_cpu = trial_cpus
    bundle_gpu = (1.0 if use_gpu else 0.0) if workers > 1 else trial_gpus
    fits = [c >= bundle_cpu and g >= bundle_gpu for c, g in zip(cpus, gpus, strict=True)]
    whole = sum(min(int(c // bundle_cpu), int(g // bundle_gpu) if bundle_gpu else 10**6)
                for c, g in zip(cpus, gpus, strict=True))  # fmt: skip
    if any(fits) and whole >= workers:
        return
    asked = f"--cpus-per-trial {settings.cpus_per_trial} --gpus-per-trial {settings.gpus_per_trial}"
    if workers > 1:
        asked += f" with {workers} workers per trial (each {bundle_cpu:g} CPU, {bundle_gpu:g} GPU)"
    raise AsdError(
        f"{asked} cannot run on this Ray cluster: it has {sum(cpus):g} CPUs and {sum(gpus):g} "
        f"GPUs in {len(nodes)} node(s), the largest {max(cpus):g} CPUs and {max(gpus):g} GPUs; "
        "trials would wait forever"
    )


def workers_per_trial(settings: SweepSettings) -> int:
    """Ray Train workers per trial: explicit, else one per GPU when a trial has several."""
    gpus = settings.gpus_per_trial or 0.0
    if (settings.workers_per_trial or 0) < 0:
        raise AsdError("--workers-per-trial must be >= 0")
    if gpus > 1 and not float(gpus).is_integer():
        raise AsdError(f"--gpus-per-trial {gpus}: above 1 it must be whole (one per worker)")
    workers = settings.workers_per_trial or (int(gpus) if gpus > 1 else 1)
    if workers > 1 and gpus > 0 and gpus != workers:
        raise AsdError(
            f"--workers-per-trial {workers} with --gpus-per-trial {gpus}: each worker holds "
            "one GPU, so give the same number (or leave --workers-per-trial out)"
        )
    return workers


def machine_groups(
    index: pd.DataFrame, settings: SweepSettings
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split machine types into the tuned group and the held-out group (first-shot honesty)."""
    present = tuple(sorted(index["machine"].unique()))
    holdout = tuple(settings.holdout_machines or ())
    tune_group = tuple(settings.tune_machines or [m for m in present if m not in holdout])
    for machine in (*tune_group, *holdout):
        if machine not in present:
            raise AsdError(
                f"machine type '{machine}' is not in the data (found: {', '.join(present)})"
            )
    overlap = set(tune_group) & set(holdout)
    if overlap:
        raise AsdError(f"machine types both tuned and held out: {', '.join(sorted(overlap))}")
    if not tune_group:
        raise AsdError("no machine types left to tune on (check --holdout-machines)")
    return tune_group, holdout
