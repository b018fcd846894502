"""The sweep driver: features once, Ray Tune (Optuna TPE + ASHA), MLflow parent run, promotion.

Order of work, chosen so that nothing finished is lost and nothing slow starts before the
cheap checks pass: validate the space, reach MLflow, index the data, extract features (once,
cached), start or resume Tune, then trial_summary, score the winner on held-out machine types,
register it, and optionally promote it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from asd.errors import AsdError
from asd.sweep.checks import (
    check_name,
    check_resources,
    check_same_space,
    check_settings,
    remember_space,
)
from asd.sweep.space import SearchSpace, load_space
from asd.sweep.summary import TRIAL_SCORES, SweepResult, finalise_runs, log_summary, trial_summary
from asd.sweep.trial import OBJECTIVE, TrialSetup, load_epoch_hook, run_trial
from asd.sweep.winner import register, score_holdout, winner

log = logging.getLogger(__name__)


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
    """Tune storage (shared storage on multi-node clusters); default <workdir>/ray_results."""
    num_samples: int | None = None
    max_concurrent_trials: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 0
    """Data-parallel Ray Train workers per trial; 0 = ``gpus_per_trial`` when it is > 1,
    else 1 (the plain single-process trial). With GPUs each worker holds one."""
    max_failures: int = 1
    """Retries of a failed trial (from its last checkpoint) before it is recorded as failed."""
    tune_machines: tuple[str, ...] | None = None
    """Machine types whose test scores the search optimises (default: all)."""
    holdout_machines: tuple[str, ...] = ()
    """Machine types the search never scores; only the winner is scored on them."""
    resume: bool = False
    promote: bool = False
    model_name: str = "asd-encoder"
    seed: int = 0
    device: str = "auto"
    ground_truth: Path | None = None
    epoch_hook: str | None = None
    """``module:function`` each trial calls as ``hook(trial_id, epoch, trial_dir)`` at the start
    of every epoch's report: for fault-injection tests and custom checks."""


def run_sweep(settings: SweepSettings) -> SweepResult:
    """Run (or resume) a sweep end to end and return its summary."""
    from asd.data import fingerprint, index_dataset
    from asd.features import extract_features
    from asd.fingerprint import STORE_NAME
    from asd.tracking import Tracker

    start = time.monotonic()
    check_settings(settings)
    space = load_space(settings.space)
    if settings.epoch_hook:
        load_epoch_hook(settings.epoch_hook)  # a typo fails here, not in every trial
    workers = workers_per_trial(settings)  # a bad GPU/worker pair fails before any work
    workdir, storage, name, tracking_uri = _locate(settings, space, workers)
    data_root = settings.data or _synthetic_data(workdir)
    index = index_dataset(data_root, ground_truth=settings.ground_truth)
    tune_machines, holdout = _machine_groups(index, settings)
    features = extract_features(index, space.base.features, workdir / "features")
    data_fp = fingerprint(index, workdir / "features" / STORE_NAME)  # a stat per clip

    if not settings.resume:
        remember_space(storage, name, settings.space)
    tracker = Tracker(tracking_uri, settings.experiment, journal_dir=workdir / "journal" / name)
    tags = {"asd.space": str(settings.space), "asd.data": str(data_root)}
    tags.update({"asd.data_fingerprint": data_fp, "asd.tune_machines": ",".join(tune_machines)})
    tags["asd.holdout_machines"] = ",".join(holdout)
    params = {f"space.{p.key}": f"{p.kind}{list(p.values)}" for p in space.params}
    parent = tracker.start_sweep(name, params=params, tags=tags)
    setup = TrialSetup(
        base_config=space.base,
        features_path=str(features.path),
        tune_machines=tune_machines,
        tracking_uri=tracking_uri,
        experiment=settings.experiment,
        parent_run_id=parent,
        sweep_id=name,
        data_fingerprint=data_fp,
        journal_dir=str(workdir / "journal" / name),
        device=settings.device,
        epoch_hook=settings.epoch_hook,
        workers_per_trial=workers,
        use_gpu=settings.gpus_per_trial > 0,
        cpus_per_worker=settings.cpus_per_trial,
        compile_cache=str(workdir / "compile-cache"),
    )
    phases = {"setup": time.monotonic() - start}
    mark = time.monotonic()
    try:
        results = _tune(space, settings, setup, storage, name, storage / name)
    except BaseException:
        tracker.finish(parent, status="FAILED")  # a refused or broken sweep is never RUNNING
        raise
    phases["tune"] = time.monotonic() - mark
    result = _conclude(tracker, setup, trial_summary(results), features, settings, space, holdout)
    result.phases = {**phases, **result.phases}
    result.wall_s = time.monotonic() - start
    tracker.log_metrics(parent, {"sweep.wall_s": result.wall_s, "sweep.train_s": result.train_s})
    tracker.finish(parent, status="FINISHED")
    return result


def _locate(
    settings: SweepSettings, space: SearchSpace, workers: int
) -> tuple[Path, Path, str, str]:
    """(workdir, Tune storage, sweep name, tracking URI), checked before any slow work.

    It also starts (or joins) Ray and checks a trial fits on some node.
    """
    from asd.tracking import check_tracking, default_tracking_uri

    workdir = settings.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    storage = Path(settings.storage_path or workdir / "ray_results").resolve()
    name = settings.name or _default_name(space.name, storage, settings.resume)
    check_name(name)
    sweep_dir = storage / name
    if settings.resume and not sweep_dir.exists():
        raise AsdError(f"nothing to resume: no sweep '{name}' in {storage}")
    if not settings.resume and sweep_dir.exists():
        raise AsdError(
            f"sweep '{name}' already exists in {storage}: pass --resume to continue it "
            "or --name to start another"
        )
    if settings.resume:
        check_same_space(storage, name, settings.space)
    tracking_uri = settings.tracking_uri or default_tracking_uri(workdir)
    check_tracking(tracking_uri)
    _init_ray(settings)
    check_resources(settings, workers)  # a trial no node can hold would stay PENDING forever
    return workdir, storage, name, tracking_uri


def _conclude(
    tracker: Any,
    setup: TrialSetup,
    summary: pd.DataFrame,
    features: Any,
    settings: SweepSettings,
    space: SearchSpace,
    holdout: tuple[str, ...],
) -> SweepResult:
    """Close the trials' runs; score the winner on held-out machine types; register it.

    ``result.phases`` gets ``finalise``, ``holdout`` and ``register`` seconds.
    """
    mark = time.monotonic()
    result = SweepResult(
        name=setup.sweep_id,
        parent_run_id=setup.parent_run_id,
        summary=summary,
        best_trial_id=None,
        best_run_id=None,
        train_s=float(summary.get("train_s", pd.Series(dtype=float)).sum()),
    )
    finalise_runs(tracker, summary)
    finished = summary[summary["status"] == "finished"] if not summary.empty else summary
    if not finished.empty:
        best = finished.sort_values(OBJECTIVE, ascending=False).iloc[0]
        result.best_trial_id, result.best_run_id = best["trial_id"], best["mlflow_run_id"]
        encoder, cfg, encoder_path = winner(Path(best["trial_dir"]) / "artifacts")
        result.family, result.scorer = cfg.scoring.family, cfg.scoring.estimator
        result.tune_scores = {k: float(best[k]) for k in TRIAL_SCORES if pd.notna(best.get(k))}
        result.phases["finalise"], mark = time.monotonic() - mark, time.monotonic()
        if holdout:
            result.holdout_scores = score_holdout(encoder, cfg, features, holdout, settings)
            result.phases["holdout"], mark = time.monotonic() - mark, time.monotonic()
        if encoder_path is None:
            result.note = (
                f"the winner is the untrained reference ({cfg.scoring.reference} log-mel, "
                f"{cfg.scoring.estimator}): there is no encoder to register; score with it "
                "through `asd evaluate --embedding mean-logmel` (or mean-std-logmel)"
            )
        else:
            register(
                tracker,
                result,
                encoder_path,
                settings,
                setup.data_fingerprint,
                setup.tune_machines,
                holdout,
            )
            result.phases["register"], mark = time.monotonic() - mark, time.monotonic()
    log_summary(tracker, setup.parent_run_id, result, space)
    result.phases["finalise"] = result.phases.get("finalise", 0.0) + time.monotonic() - mark
    return result


def _tune(
    space: SearchSpace,
    settings: SweepSettings,
    setup: TrialSetup,
    storage: Path,
    name: str,
    sweep_dir: Path,
) -> Any:
    """Start or restore the Tune experiment and run it to the end."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    _init_ray(settings)
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    max_concurrent = settings.max_concurrent_trials or space.sweep.get("max_concurrent_trials")
    if setup.workers_per_trial > 1:
        # The trial function only waits on its Ray Train workers, whose placement group holds
        # the CPUs and GPUs; Tune refuses 0, so it asks for a sliver. Without a cap, idle
        # drivers would pile up: run as many trials as there are whole worker groups.
        import ray

        resources = {"cpu": 0.1}
        if max_concurrent is None and setup.use_gpu:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            max_concurrent = max(1, gpus // setup.workers_per_trial)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources)
    if settings.resume:
        if not tune.Tuner.can_restore(str(sweep_dir)):
            raise AsdError(f"sweep '{name}' in {storage} cannot be restored (no Tune state)")
        tuner = tune.Tuner.restore(str(sweep_dir), trainable, resume_errored=True)
    else:
        sweep_dir.parent.mkdir(parents=True, exist_ok=True)
        optuna_db = storage / f"{name}.optuna.db"
        searcher = OptunaSearch(
            metric=OBJECTIVE,
            mode="max",
            study_name=name,
            storage=optuna.storages.RDBStorage(f"sqlite:///{optuna_db}"),
            seed=settings.seed,
        )
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=space.max_epochs,
            grace_period=min(space.sweep.get("grace_period", 1), space.max_epochs),
            reduction_factor=space.sweep.get("reduction_factor", 3),
        )
        tuner = tune.Tuner(
            trainable,
            param_space=space.to_tune(),
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode="max",
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=settings.num_samples or space.sweep.get("num_samples", 8),
                max_concurrent_trials=max_concurrent or 1,
                # one warm worker process runs trial after trial: torch, MLflow and the
                # compile cache are loaded once per worker, not once per trial
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=1,
            ),
        )
    return tuner.fit()


def workers_per_trial(settings: SweepSettings) -> int:
    """Ray Train workers per trial: explicit, else one per GPU when a trial has several."""
    gpus = settings.gpus_per_trial
    if settings.workers_per_trial < 0:
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


def _default_name(space_name: str, storage: Path, resume: bool) -> str:
    """A new sweep: ``<space>-<time>``; ``--resume`` without a name: the latest of that space."""
    if not resume:
        return f"{space_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    earlier = sorted(
        (p for p in storage.glob(f"{space_name}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    if not earlier:
        raise AsdError(f"nothing to resume: no sweep of space '{space_name}' in {storage}")
    log.info("resuming the latest sweep of space '%s': %s", space_name, earlier[-1].name)
    return earlier[-1].name


def _init_ray(settings: SweepSettings) -> None:
    import ray

    if ray.is_initialized():
        return
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, log_to_driver=True)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=True)  # inside `ray job submit`: the job's cluster
        else:
            # address="local": a new in-process instance, never a cluster that someone else
            # started on this machine with `ray start` (which a bare ray.init() would join).
            ray.init(address="local", include_dashboard=False, log_to_driver=True)
    except ConnectionError as exc:
        raise AsdError(
            f"cannot reach Ray at {settings.ray_address or os.environ.get('RAY_ADDRESS')}: {exc}"
        ) from None


def _synthetic_data(workdir: Path) -> Path:
    """A small synthetic DCASE tree, generated once per workdir."""
    from asd.synth import synthesize

    root = workdir / "synthetic"
    if not (root / "dev_data").exists():
        log.info("no --data given: generating a small synthetic set in %s", root)
        synthesize(root, seed=0)
    return root


def _machine_groups(
    index: pd.DataFrame, settings: SweepSettings
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split machine types into the tuned group and the held-out group (first-shot honesty)."""
    present = tuple(sorted(index["machine"].unique()))
    holdout = tuple(settings.holdout_machines)
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
