"""One Ray Tune trial: train the encoder, validate every epoch, score with every scorer.

Runs inside a Ray worker, top to bottom: open the trial's MLflow child run, train, close the
run, then send the last row to Tune. Per epoch (:mod:`asd.sweep.epochs`) it reports a cheap
estimate of the validation score (the official hmean of the trial's detector on the tuning
machines' test clips, see :mod:`asd.detect.validation`) to Tune, which ASHA uses to stop weak
trials, and logs the headline metrics to the trial's MLflow child run in one batch. The full
evaluation (every scorer, out-of-fold thresholds, the untrained reference beside the
detector: ``reference.*``, ``vs_reference.*``) runs at the last epoch, and every
``validate_every``-th epoch when asked; the last one also logs tables (per machine type and
section: :mod:`asd.tracking.figures`), a description, plots, submission CSVs and the encoder.
A trial of the ``reference`` family trains nothing: it is evaluated once and reports one
result.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asd.config import Config
from asd.detect.detector import detector_spec
from asd.detect.pipeline import train_encoder
from asd.detect.validation import validation_set
from asd.features import FeatureSet, load_features
from asd.model.compilation import use_compile_cache
from asd.sweep.epochs import (
    FinalReport,
    MlflowLogger,
    RankZeroEpochs,
    TrialEpochs,
    TuneReporter,
    chain,
    load_epoch_hook,
    untrained_cache,
)
from asd.sweep.notes import TrialNotes, collect_notes
from asd.sweep.parallel import train_data_parallel
from asd.sweep.rows import Timings
from asd.sweep.storage import restore_checkpoint
from asd.tracking import TAG_SWEEP, Tracker
from asd.tracking.system import system_metrics

if TYPE_CHECKING:
    from ray.tune import TuneContext

# Ray stays a lazy import (``from ray import tune`` inside the functions that run in a Tune
# worker): the driver imports this module for TrialSetup before Ray is initialised.


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares; pickled once into Ray's object store."""

    base_config: Config
    features_path: str
    tune_machines: tuple[str, ...]
    tracking_uri: str
    experiment: str
    parent_run_id: str
    sweep_id: str
    data_fingerprint: str
    journal_dir: str
    device: str = "auto"
    epoch_hook: str | None = None
    """``module:function`` called as ``hook(trial_id, epoch, trial_dir)`` at the start of each
    epoch's report, before anything of that epoch is logged or reported: for fault-injection
    tests and custom checks (raise to fail the trial)."""
    workers_per_trial: int = 1
    """Above 1, the trial trains data parallel on that many Ray Train workers."""
    use_gpu: bool = False
    """Data-parallel workers hold one GPU each."""
    cpus_per_worker: float = 1.0
    """CPUs per data-parallel worker."""
    system_metrics_s: float = 10.0
    """Seconds between samples of the trial's CPU, memory and GPU use in MLflow (0 = off)."""
    compile_cache: str | None = None
    """torch.compile cache folder shared by every trial (``train.compile``): the first trial
    compiles, later ones load its kernels."""
    validate_every: int = 0
    """Full evaluation every this many epochs besides the last (0: the last only)."""
    checkpoint_every: int = 5
    """Resumable checkpoint every this many epochs besides the last (0: the last only)."""
    report_at: tuple[int, ...] | None = None
    """ASHA's rung epochs (:func:`asd.sweep.tuner.rung_epochs`): a trial validates and reports
    to Tune there, at its checkpoints and at its last epoch only (None: every epoch)."""
    verbose: bool = False
    """Print the trial's notes and progress lines (else they go to its run's notes.txt only)."""


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """The Tune function trainable (wrapped with ``tune.with_parameters``).

    The last report is the last thing it does: Ray may end this worker as soon as the
    trial's final result arrives, and a worker that exits while the trial thread still
    frees tensors, stops MLflow's monitor or writes files can abort in torch's destructors
    (``Fatal Python error: Aborted`` in the console). So training, evaluation, MLflow and
    the notes are all closed first, and the final row is reported after.
    """
    with collect_notes(setup.verbose) as notes:
        final = _run_trial(params, setup, notes)
        gc.collect()  # the encoder, its optimizer and their tensors go now, not at worker exit
        if final is not None:
            final.send()


def _run_trial(params: dict[str, Any], setup: TrialSetup, notes: TrialNotes) -> FinalReport | None:
    """Open the trial's run, train and validate, close the run; the final report, not yet sent.

    A detector without an encoder trains nothing: it is evaluated once, and its one report is
    the trial's last (Tune marks it finished; ASHA, which compares trials at later epochs,
    never stops it), with a checkpoint holding only ``config.json``.
    """
    from ray import tune

    began = time.time()
    cfg = setup.base_config.with_overrides(params)
    if setup.compile_cache:
        use_compile_cache(setup.compile_cache)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    features = load_features(setup.features_path)
    tracker, run_id = _start_run(setup, cfg, trial_id)
    trial_dir = _trial_folder(context)
    # Checkpoints live in a scratch folder (Tune copies each reported one into the sweep's
    # storage); final artifacts go to the trial folder, which outlives MLflow outages.
    scratch = Path(tempfile.mkdtemp(prefix=f"asd-{trial_id}-"))
    ckpt_dir = scratch / "checkpoints"
    ckpt_dir.mkdir()
    artifacts = trial_dir / "artifacts"
    tune_reporter = TuneReporter(ckpt_dir, artifacts, scratch, setup.checkpoint_every)
    mlflow_logger = MlflowLogger(tracker, run_id, cfg, artifacts, setup.data_fingerprint, notes)
    epochs = TrialEpochs(
        cfg,
        validation_set(features, setup.tune_machines),
        trial_id,
        trial_dir,
        run_id,
        report=chain(mlflow_logger, tune_reporter),  # MLflow first: Tune may stop the trial
        device=setup.device,
        cache=untrained_cache(setup, cfg),
        validate_every=setup.validate_every,
        report_at=setup.report_at,
        checkpoint_every=setup.checkpoint_every,
        hook=load_epoch_hook(setup.epoch_hook) if setup.epoch_hook else None,
        verbose=setup.verbose,
        timings=Timings(setup_s=time.time() - began),  # features, MLflow run, folders
    )
    try:
        with system_metrics(setup.tracking_uri, run_id, setup.system_metrics_s):
            if not detector_spec(cfg.scoring).uses_encoder:
                epochs.step(0, {}, None, last=True)
            else:
                _train(setup, cfg, features, epochs, tracker, ckpt_dir)
    except BaseException as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(exc, Exception):
            tracker.set_tags(run_id, {"asd.error": str(exc)[:5000]})
            tracker.finish(run_id, status="FAILED")
        raise
    tracker.finish(run_id, status="FINISHED")
    if tune_reporter.final is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return tune_reporter.final


def _trial_folder(context: TuneContext) -> Path:
    """The trial's folder in Tune's storage when that is a folder; else its working folder.

    Not ``get_trial_dir()`` alone: in an actor Tune reuses (``reuse_actors``) Ray resets it to
    the local working folder under /tmp/ray, so a second trial's artifacts would not be in
    its trial folder.
    """
    import pyarrow.fs  # Ray's storage layer, as heavy: imported where used

    storage = context.get_storage()
    if storage is not None and isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return Path(storage.trial_fs_path)
    return Path(context.get_trial_dir())


def _start_run(setup: TrialSetup, cfg: Config, trial_id: str) -> tuple[Tracker, str]:
    """The trial's tracker and its MLflow child run under the sweep's parent run."""
    tracker = Tracker(setup.tracking_uri, setup.experiment, journal_dir=Path(setup.journal_dir))
    run_id = tracker.start_trial(
        setup.parent_run_id,
        trial_id,
        params=cfg.to_flat(),
        tags={
            TAG_SWEEP: setup.sweep_id,
            "asd.data_fingerprint": setup.data_fingerprint,
            "asd.tune_machines": ",".join(setup.tune_machines),
            "asd.family": cfg.scoring.family,
        },
    )
    return tracker, run_id


def _train(
    setup: TrialSetup,
    cfg: Config,
    features: FeatureSet,
    epochs: TrialEpochs,
    tracker: Tracker,
    ckpt_dir: Path,
) -> None:
    """Train one trial's encoder (resuming from Tune's checkpoint), here or data parallel."""
    from ray import tune

    restored = restore_checkpoint(tune.get_checkpoint(), ckpt_dir)
    if restored:
        tracker.set_tags(epochs.run_id, {"asd.resumed_from_checkpoint": "true"})
    if setup.workers_per_trial > 1:
        # Rank 0 of the worker group validates and logs with its own tracker and validation
        # set; Ray Train keeps this trial's checkpoints in the trial folder and resumes from
        # them when Tune retries or restores the trial.
        train_data_parallel(
            cfg,
            setup.features_path,
            workers=setup.workers_per_trial,
            use_gpu=setup.use_gpu,
            report=RankZeroEpochs(
                setup, cfg, epochs.trial_id, epochs.run_id, str(epochs.trial_dir)
            ),
            storage_path=epochs.trial_dir,
            name="train",
            cpus_per_worker=setup.cpus_per_worker,
            resume_from=ckpt_dir if restored else None,
            compile_cache=setup.compile_cache,
        )
    else:
        train_encoder(  # it picks the normal train clips itself
            cfg,
            features,
            device=setup.device,
            report=epochs,
            checkpoint_dir=ckpt_dir,
            progress=setup.verbose,
            checkpoint_every=setup.checkpoint_every,
        )
