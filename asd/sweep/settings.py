"""How and where a sweep runs: the settings a user gives, completed from the space's defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asd.config import DEFAULT_WORKDIR

if TYPE_CHECKING:
    from asd.sweep.space import SearchSpace




@dataclass(frozen=True)
class SweepSettings:
    """Where and how a sweep runs; the search space says what it searches."""

    space: Path
    """Search space: a YAML file, or the name of a shipped one (smoke, default, paper)."""
    data: Path | None = None
    """DCASE tree (default: a small synthetic set made in the workdir on first use)."""
    workdir: Path = DEFAULT_WORKDIR
    """Feature cache, journal, Tune storage, the local MLflow store and the Optuna database;
    shared by every node on a cluster."""
    name: str | None = None
    """Sweep name: Tune experiment, MLflow parent run, Optuna study
    (default: <space>-<date>-<time>)."""
    tracking_uri: str | None = None
    """MLflow server (default: $MLFLOW_TRACKING_URI on the command line, else a local SQLite
    store in the workdir)."""
    experiment: str = "asd"
    """MLflow experiment."""
    ray_address: str | None = None
    """Ray cluster (default: in-process Ray, or the job's cluster under ``ray job``)."""
    storage_path: str | None = None
    """Tune storage: a folder or a URI such as ``s3://bucket/prefix`` (handed to Ray as is),
    shared on multi-node clusters (default: <workdir>/ray_results)."""
    num_samples: int | None = None
    """Trials (default: from the space)."""
    max_concurrent_trials: int | None = None
    """Trials at a time (default: from the space)."""
    cpus_per_trial: float | None = None
    """CPUs per trial (default: the space's ``sweep.cpus_per_trial``, else 1)."""
    gpus_per_trial: float | None = None
    """GPUs per trial, fractions allowed (default: the space's ``sweep.gpus_per_trial``,
    else 0)."""
    workers_per_trial: int | None = None
    """Data-parallel Ray Train workers per trial; 0 = ``gpus_per_trial`` when it is > 1,
    else 1 (the plain single-process trial). With GPUs each worker holds one
    (default: the space's ``sweep.workers_per_trial``, else 0)."""
    max_failures: int = 1
    """Retries of a failed trial (from its last checkpoint) before it is recorded as failed."""
    tune_machines: tuple[str, ...] | None = None
    """Machine types whose test scores the search optimises (default: the space's
    ``sweep.tune_machines``, else all but the held-out ones)."""
    holdout_machines: tuple[str, ...] | None = None
    """Machine types the search never scores; only the winner is scored on them
    (default: the space's ``sweep.holdout_machines``, else none)."""
    validate_every: int | None = None
    """Full evaluation of each trial (every scorer, thresholds out of fold, the references
    beside it) every this many epochs besides the last; other epochs report a cheap estimate
    (one scorer, few refits) that ranks trials alike. 0: the last epoch only (default: the
    space's ``sweep.validate_every``, else 0)."""
    checkpoint_every: int | None = None
    """Resumable checkpoint of each trial every this many epochs besides the last (a failed
    trial resumes from the latest); 0: the last epoch only (default: the space's
    ``sweep.checkpoint_every``, else 5)."""
    resume: bool = False
    """Continue an interrupted sweep of the same name."""
    promote: bool = False
    """Promote the winner if it beats the champion."""
    model_name: str = "asd-encoder"
    """Registered model name."""
    seed: int = 0
    """Optuna sampler seed."""
    device: str = "auto"
    """Torch device of each trial: auto, cpu, cuda, cuda:1 ..."""
    ground_truth: Path | None = None
    """Eval ground-truth CSV folder."""
    epoch_hook: str | None = None
    """``module:function`` each trial calls as ``hook(trial_id, epoch, trial_dir)`` at the start
    of every epoch's report: for fault-injection tests and custom checks."""
    verbose: bool = False
    """Ray Tune's own result tables instead of one line per trial event."""
    dashboard: bool = False
    """In-process Ray only: start Ray's dashboard on 127.0.0.1 (its URL is logged)."""
    system_metrics_s: float = 10.0
    """Seconds between samples of each trial's CPU, memory and GPU use in its MLflow run
    (0: off)."""
    command: str | None = None
    """The command line that started the sweep (credentials masked), for the parent run."""


RUN_DEFAULTS: dict[str, Any] = {
    "cpus_per_trial": 1.0,
    "gpus_per_trial": 0.0,
    "workers_per_trial": 0,
    "tune_machines": None,
    "holdout_machines": (),
    "validate_every": 0,
    "checkpoint_every": 5,
}
"""Settings a flag, else the space's ``sweep:`` section, else these values decide."""


def with_space_defaults(settings: SweepSettings, space: SearchSpace) -> SweepSettings:
    """Fill the settings left unset (None) from the space's ``sweep:`` section, then defaults."""
    filled = {
        key: space.sweep.get(key, default)
        for key, default in RUN_DEFAULTS.items()
        if getattr(settings, key) is None
    }
    return replace(settings, **filled)
