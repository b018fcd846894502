"""How and where a sweep runs: the settings a user gives, completed from the space's defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asd.sweep.space import SearchSpace


@dataclass(frozen=True)
class SweepSettings:
    """Where and how a sweep runs; the search space says what it searches."""

    space: Path
    """A search space file (search_spaces/*.yaml)."""
    data: Path | None = None
    """DCASE tree; None generates a small synthetic set in the workdir on first use."""
    workdir: Path = Path("asd-work")
    """Feature cache, sweep storage, the local MLflow store and the Optuna database."""
    name: str | None = None
    """Sweep name (Tune experiment, MLflow parent run, Optuna study); default from the space."""
    tracking_uri: str | None = None
    """MLflow tracking URI; None = a local SQLite store in the workdir."""
    experiment: str = "asd"
    """MLflow experiment."""
    ray_address: str | None = None
    """Ray cluster address; None = in-process Ray (or the job's cluster under `ray job`)."""
    storage_path: str | None = None
    """Tune storage: a folder or a URI such as ``s3://bucket/prefix`` (handed to Ray as is);
    shared on multi-node clusters; default <workdir>/ray_results."""
    num_samples: int | None = None
    max_concurrent_trials: int | None = None
    cpus_per_trial: float | None = None
    """CPUs per trial; None = the space's ``sweep.cpus_per_trial``, else 1."""
    gpus_per_trial: float | None = None
    """GPUs per trial (fractions allowed); None = the space's ``sweep.gpus_per_trial``, else 0."""
    workers_per_trial: int | None = None
    """Data-parallel Ray Train workers per trial; 0 = ``gpus_per_trial`` when it is > 1,
    else 1 (the plain single-process trial). With GPUs each worker holds one.
    None = the space's ``sweep.workers_per_trial``, else 0."""
    max_failures: int = 1
    """Retries of a failed trial (from its last checkpoint) before it is recorded as failed."""
    tune_machines: tuple[str, ...] | None = None
    """Machine types whose test scores the search optimises (default: the space's
    ``sweep.tune_machines``, else all but the held-out ones)."""
    holdout_machines: tuple[str, ...] | None = None
    """Machine types the search never scores; only the winner is scored on them
    (default: the space's ``sweep.holdout_machines``, else none)."""
    resume: bool = False
    promote: bool = False
    model_name: str = "asd-encoder"
    seed: int = 0
    device: str = "auto"
    ground_truth: Path | None = None
    epoch_hook: str | None = None
    """``module:function`` each trial calls as ``hook(trial_id, epoch, trial_dir)`` at the start
    of every epoch's report: for fault-injection tests and custom checks."""
    verbose: bool = False
    """Ray Tune's own result tables instead of one line per trial event."""
    dashboard: bool = False
    """In-process Ray only: start Ray's dashboard on 127.0.0.1 (its URL is logged)."""
    system_metrics_s: float = 10.0
    """Seconds between samples of each trial's CPU, memory and GPU use in MLflow (0 = off)."""
    command: str | None = None
    """The command line that started the sweep (credentials masked), for the parent run."""


RUN_DEFAULTS: dict[str, Any] = {
    "cpus_per_trial": 1.0,
    "gpus_per_trial": 0.0,
    "workers_per_trial": 0,
    "tune_machines": None,
    "holdout_machines": (),
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
