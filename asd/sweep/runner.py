"""The sweep driver: features once, Ray Tune (Optuna TPE + ASHA), MLflow parent run, promotion.

Order of work, chosen so that nothing finished is lost and nothing slow starts before the
cheap checks pass: validate the space, reach MLflow, index the data, extract features (once,
cached), start or resume Tune, then trial_summary, score the winner on held-out machine types,
register it, and optionally promote it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from asd.data.fingerprint import STORE_NAME
from asd.data.index import fingerprint
from asd.data.layouts import index_data
from asd.data.synth.tree import synthesize
from asd.detect.detector import detector_spec
from asd.errors import AsdError
from asd.features import FeatureSet, extract_features
from asd.sweep.checks import (
    check_name,
    check_resources,
    check_same_space,
    check_settings,
    machine_groups,
    remember_space,
    workers_per_trial,
)
from asd.sweep.cluster import check_trial_nodes
from asd.sweep.descriptions import sweep_note
from asd.sweep.epochs import load_epoch_hook
from asd.sweep.notes import collect_notes
from asd.sweep.provenance import ARTIFACT_PATH as PROVENANCE
from asd.sweep.provenance import write_provenance
from asd.sweep.rows import OBJECTIVE, TRIAL_SCORES, TrialRow, total_seconds
from asd.sweep.settings import SweepSettings, with_space_defaults
from asd.sweep.space import SearchSpace, load_space, resolve_space
from asd.sweep.storage import is_uri, latest_sweep, storage_root, sweep_exists
from asd.sweep.summary import (
    SweepResult,
    close_lost_trials,
    close_running_children,
    finalise_runs,
    log_summary,
    trial_summary,
    ui_page,
)
from asd.sweep.trial import TrialSetup
from asd.sweep.tuner import run_tune, rung_epochs
from asd.sweep.winner import (
    register,
    register_winner_detector,
    score_holdout,
    winner,
    winner_artifacts,
    winner_tags,
)
from asd.tracking import Tracker, check_tracking, default_tracking_uri
from asd.tracking.figures import NOTE_TAG

WINNER_NOTES = "winner_notes.txt"
"""The parent run's artifact with the notes of scoring and registering the winner."""

if TYPE_CHECKING:
    from ray.tune import Result

# Ray is imported where it is used: the CLI imports this module for `asd sweep --help` and
# the settings before Ray starts.

log = logging.getLogger(__name__)


def run_sweep(settings: SweepSettings) -> SweepResult:
    """Run (or resume) a sweep end to end and return its summary."""
    start = time.monotonic()
    space_file = resolve_space(settings.space)
    space = load_space(space_file)
    settings = with_space_defaults(settings, space)
    check_settings(settings)
    if settings.epoch_hook:
        load_epoch_hook(settings.epoch_hook)  # a typo fails here, not in every trial
    workers = workers_per_trial(settings)  # a bad GPU/worker pair fails before any work
    workdir = settings.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    storage = storage_root(settings.storage_path, workdir)
    records = _local_root(storage, workdir)
    name = _sweep_name(settings, space, storage, records, space_file)
    tracking_uri = settings.tracking_uri or default_tracking_uri(workdir)
    check_tracking(tracking_uri)
    _init_ray(settings)
    check_resources(settings, workers)  # a trial no node can hold would stay PENDING forever
    data_root, index, features = _load_data(settings, space, workdir)
    tune_machines, holdout = machine_groups(index, settings)
    data_fp = fingerprint(index, workdir / "features" / STORE_NAME)  # a stat per clip
    check_trial_nodes(settings, workdir, str(features.path), workers)
    if not settings.resume:
        remember_space(records, name, space_file)
    tracker = Tracker(tracking_uri, settings.experiment, journal_dir=workdir / "journal" / name)
    data = {"root": str(data_root), "fingerprint": data_fp, "tune_machines": tune_machines,
            "holdout_machines": holdout, "clips": len(index)}  # fmt: skip
    parent = _start_parent(tracker, name, settings, space_file, space, data)
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
        **_trial_options(settings, workers, workdir),
        report_at=rung_epochs(space),
    )
    if settings.resume:  # a driver killed outright (kill -9) could not close them itself
        close_running_children(tracking_uri, parent, "left RUNNING by a sweep driver that died")
    phases = {"setup": time.monotonic() - start}
    mark = time.monotonic()
    try:
        results = run_tune(space, settings, setup, storage, name, records)
    except BaseException as exc:
        tracker.finish(parent, status="FAILED")  # a refused or broken sweep is never RUNNING
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):  # SIGINT; SIGTERM (Ray's handler)
            _stopped(settings, tracking_uri, parent)
        raise
    phases["tune"] = time.monotonic() - mark
    result = _conclude(tracker, setup, results, features, settings, space, holdout)
    result.phases = {**phases, **result.phases}
    result.wall_s = time.monotonic() - start
    tracker.log_metrics(parent, {"sweep.wall_s": result.wall_s, "sweep.train_s": result.train_s})
    tracker.finish(parent, status="FINISHED")
    result.ui = ui_page(tracker, parent)
    return result


def _conclude(
    tracker: Tracker,
    setup: TrialSetup,
    results: list[Result],
    features: FeatureSet,
    settings: SweepSettings,
    space: SearchSpace,
    holdout: tuple[str, ...],
) -> SweepResult:
    """Close the trials' runs; score the winner on held-out machine types; register it.

    The winner comes from its trial's last Tune checkpoint (``config.json``, and
    ``encoder.pt`` unless it is the untrained reference), fetched into
    ``<workdir>/winners/<sweep>``. ``result.phases`` gets ``finalise``, ``holdout`` and
    ``register`` seconds.
    """
    mark = time.monotonic()
    summary = trial_summary(results)
    result = SweepResult(
        name=setup.sweep_id,
        parent_run_id=setup.parent_run_id,
        summary=summary,
        best_trial_id=None,
        best_run_id=None,
        train_s=total_seconds(summary).train_s,
    )
    finalise_runs(tracker, summary)
    if settings.resume:
        close_lost_trials(tracker.tracking_uri, setup.parent_run_id, summary)
    best = _best_row(summary)
    if best is not None:
        mark = _crown_winner(
            tracker, setup, results, features, settings, holdout, best, result, mark
        )
    log_summary(tracker, setup.parent_run_id, result, space)
    tracker.set_tags(setup.parent_run_id, {NOTE_TAG: sweep_note(result, space, settings.command)})
    result.phases["finalise"] = result.phases.get("finalise", 0.0) + time.monotonic() - mark
    return result


def _crown_winner(
    tracker: Tracker,
    setup: TrialSetup,
    results: list[Result],
    features: FeatureSet,
    settings: SweepSettings,
    holdout: tuple[str, ...],
    best: pd.Series,
    result: SweepResult,
    mark: float,
) -> float:
    """Fetch the best trial's detector, score it on the held-out types, register its encoder.

    Fills ``result`` in place (phases ``finalise`` since ``mark``, ``holdout``, ``register``);
    returns the clock mark the caller's ``finalise`` phase goes on from.
    """
    row = TrialRow.from_summary(best)
    result.best_trial_id, result.best_run_id = row.trial_id, row.run_id
    dest = settings.workdir.resolve() / "winners" / setup.sweep_id
    artifacts = winner_artifacts(results, best, dest)
    encoder, cfg, encoder_path = winner(artifacts, row.family or "encoder")
    result.family, result.scorer = cfg.scoring.family, cfg.scoring.estimator
    result.detector = detector_spec(cfg.scoring).describe(cfg.scoring.estimator)
    result.tune_scores = {k: row.figures[k] for k in TRIAL_SCORES if k in row.figures}
    result.phases["finalise"], mark = time.monotonic() - mark, time.monotonic()
    with collect_notes(settings.verbose) as notes:  # the fits' notes go to the parent run
        if holdout:
            result.holdout_scores = score_holdout(encoder, cfg, features, holdout, settings)
            result.phases["holdout"], mark = time.monotonic() - mark, time.monotonic()
        if encoder_path is None:
            result.note = (
                f"the winner is untrained ({result.detector}): there is no encoder to register, "
                "only its detector"
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
        tags = winner_tags(result, setup.data_fingerprint, setup.tune_machines, holdout)
        register_winner_detector(tracker, result, encoder, cfg, features, settings, tags)
    if notes.lines:
        _log_winner_notes(tracker, setup.parent_run_id, notes.text(), settings.workdir)
    result.phases["register"], mark = time.monotonic() - mark, time.monotonic()
    return mark


def _log_winner_notes(tracker: Tracker, run_id: str, text: str, workdir: Path) -> None:
    """The notes of scoring and fitting the winner (shrinkage fallbacks ...) as an artifact."""
    folder = Path(tempfile.mkdtemp(prefix="asd-notes-", dir=workdir))
    try:
        (folder / WINNER_NOTES).write_text(text)
        tracker.log_artifact(run_id, folder / WINNER_NOTES)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _load_data(
    settings: SweepSettings, space: SearchSpace, workdir: Path
) -> tuple[Path, pd.DataFrame, FeatureSet]:
    """The data root, its clip index and its cached features (extracted once per sweep)."""
    data_root = settings.data or _synthetic_data(workdir)
    index = index_data(data_root, ground_truth=settings.ground_truth)
    return data_root, index, extract_features(index, space.base.features, workdir / "features")


def _start_parent(
    tracker: Tracker,
    name: str,
    settings: SweepSettings,
    space_file: Path,
    space: SearchSpace,
    data: dict[str, Any],
) -> str:
    """The sweep's parent run, with the space's ranges as params and its provenance files."""
    parent = tracker.start_sweep(
        name,
        params={f"space.{p.key}": f"{p.kind}{list(p.values)}" for p in space.params},
        tags={
            "asd.space": str(settings.space),
            "asd.data.index": data["root"],
            "asd.data_fingerprint": data["fingerprint"],
            "asd.tune_machines": ",".join(data["tune_machines"]),
            "asd.holdout_machines": ",".join(data["holdout_machines"]),
            "asd.command": (settings.command or "")[:4000],
        },
    )
    folder = settings.workdir.resolve() / "provenance" / name
    write_provenance(folder, settings, space_file, space, data)
    tracker.log_artifacts(parent, folder, artifact_path=PROVENANCE)
    return parent


def _sweep_name(
    settings: SweepSettings, space: SearchSpace, storage: str, records: Path, space_file: Path
) -> str:
    """The sweep's name, checked.

    Refuses a new sweep over an old one, a resume of nothing, or a resume with another search
    space than the one the sweep started with.
    """
    name = settings.name or _default_name(space.name, storage, settings.resume)
    check_name(name)
    exists = sweep_exists(storage, name)
    if settings.resume and not exists:
        raise AsdError(f"nothing to resume: no sweep '{name}' in {storage}")
    if not settings.resume and exists:
        raise AsdError(
            f"sweep '{name}' already exists in {storage}: pass --resume to continue it "
            "or --name to start another"
        )
    if settings.resume:
        check_same_space(records, name, space_file)
    return name


def _local_root(storage: str, workdir: Path) -> Path:
    """Where a sweep's local records (Optuna study, space identity) live.

    Beside the sweep, or in the work folder when storage is a bucket.
    """
    return workdir / "sweeps" if is_uri(storage) else Path(storage)


def _trial_options(settings: SweepSettings, workers: int, workdir: Path) -> dict[str, Any]:
    """The TrialSetup fields that come straight from the run settings."""
    return {
        "compile_cache": str(workdir / "compile-cache"),
        "device": settings.device,
        "epoch_hook": settings.epoch_hook,
        "workers_per_trial": workers,
        "use_gpu": bool(settings.gpus_per_trial),
        "cpus_per_worker": float(settings.cpus_per_trial or 1.0),
        "system_metrics_s": settings.system_metrics_s,
        "verbose": settings.verbose,
        "validate_every": int(settings.validate_every or 0),
        "checkpoint_every": int(settings.checkpoint_every or 0),
    }


def _best_row(summary: pd.DataFrame) -> pd.Series | None:
    """The finished trial with the highest objective (None when no trial finished)."""
    if summary.empty:
        return None
    finished = summary[summary["status"] == "finished"]
    return None if finished.empty else finished.sort_values(OBJECTIVE, ascending=False).iloc[0]


def _default_name(space_name: str, storage: str, resume: bool) -> str:
    """A new sweep: ``<space>-<time>``; ``--resume`` without a name: the latest of that space."""
    if not resume:
        return f"{space_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    latest = latest_sweep(storage, f"{space_name}-")
    if latest is None:
        raise AsdError(f"nothing to resume: no sweep of space '{space_name}' in {storage}")
    log.info("resuming the latest sweep of space '%s': %s", space_name, latest)
    return latest


def _init_ray(settings: SweepSettings) -> str | None:
    """Join the cluster, or start in-process Ray; the dashboard's address when it started one."""
    import ray

    if ray.is_initialized():
        return None
    if settings.dashboard and (settings.ray_address or os.environ.get("RAY_ADDRESS")):
        raise AsdError("--dashboard is for in-process Ray; a cluster has its own dashboard")
    level = logging.INFO if settings.verbose else logging.WARNING  # Ray's own start-up lines
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, log_to_driver=True, logging_level=level)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=True, logging_level=level)  # inside `ray job submit`
        else:
            # address="local": a new in-process instance, never a cluster that someone else
            # started on this machine with `ray start` (which a bare ray.init() would join).
            context = ray.init(
                address="local",
                include_dashboard=settings.dashboard,
                dashboard_host="127.0.0.1",
                log_to_driver=True,
                logging_level=level,
            )
            if settings.dashboard:
                log.info("Ray dashboard: http://%s", context.dashboard_url)
                return str(context.dashboard_url)
    except ConnectionError as exc:
        raise AsdError(
            f"cannot reach Ray at {settings.ray_address or os.environ.get('RAY_ADDRESS')}: {exc}"
        ) from None
    return None


def _stopped(settings: SweepSettings, tracking_uri: str, parent: str) -> None:
    """A driver stopped by a signal: close its trials' runs, shut its in-process Ray down."""
    import ray

    note = "the sweep driver was stopped by a signal; `asd sweep --resume` continues the sweep"
    close_running_children(tracking_uri, parent, note)
    if not (settings.ray_address or os.environ.get("RAY_ADDRESS")) and ray.is_initialized():
        ray.shutdown()  # its raylet, dashboard and agents would outlive this process


def _synthetic_data(workdir: Path) -> Path:
    """A small synthetic DCASE tree, generated once per workdir."""
    root = workdir / "synthetic"
    if not (root / "dev_data").exists():
        log.info("no --data given: generating a small synthetic set in %s", root)
        synthesize(root, seed=0)
    return root
