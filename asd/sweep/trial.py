"""One Ray Tune trial: train the encoder, validate every epoch, score with every scorer.

Runs inside a Ray worker. Per epoch it reports the validation score (the official hmean of
the trial's detector family and scorer on the tuning machines' test clips) to Tune, which
ASHA uses to stop weak trials, and logs the same metrics to the trial's MLflow child run in
one batch. At the last epoch it scores with *every* scorer, scores the untrained reference
beside the detector (``reference.*``, ``vs_reference.*``), and logs tables, plots,
submission CSVs and the encoder. A trial of the ``reference`` family trains nothing.
"""

from __future__ import annotations

import gc
import importlib
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asd import __version__
from asd.compilation import use_compile_cache
from asd.config import ESTIMATORS, SCORERS, Config
from asd.detector import evaluate_detector, evaluate_reference
from asd.encoder import Encoder, save_encoder
from asd.errors import AsdError
from asd.features import FeatureSet, load_features
from asd.pipeline import Evaluation, save_evaluation, train_encoder
from asd.sweep.notes import NOTES_FILE, TrialNotes, collect_notes
from asd.sweep.parallel import train_data_parallel
from asd.sweep.storage import CONFIG_FILE, ENCODER_FILE
from asd.tracking import TAG_SWEEP, Tracker
from asd.tracking.system import system_metrics

if TYPE_CHECKING:
    from collections.abc import Callable

    from ray.tune import Checkpoint, TuneContext

# Ray stays a lazy import (``from ray import tune`` inside the functions that run in a Tune
# worker): the driver imports this module for TrialSetup before Ray is initialised.

log = logging.getLogger(__name__)

OBJECTIVE = "val_hmean"
"""What Tune, ASHA and Optuna maximise: validation hmean of the trial's detector (family and
``scoring.estimator``) on the tuning machines."""

_ML, _ELLIPTIC = ESTIMATORS
_FAST_STAND_IN = {_ELLIPTIC: _ML}
"""Before the last epoch the slow robust estimator is stood in for by maximum likelihood."""

COMPANIONS = ("encoder", "reference", "fusion", "vs_reference")
"""Prefixes of the figures reported beside a trial's detector (see :mod:`asd.detector`)."""


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
    verbose: bool = False
    """Print the trial's notes and progress lines (else they go to its run's notes.txt only)."""


def load_epoch_hook(spec: str) -> Any:
    """The function named by ``module:function``; AsdError naming the spec otherwise."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise AsdError(f"--epoch-hook {spec!r}: expected module:function")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise AsdError(f"--epoch-hook {spec!r}: cannot import it ({exc})") from None
    if not callable(func):
        raise AsdError(f"--epoch-hook {spec!r} is not a function")
    return func


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
    """Train and validate one trial; its final report, not yet sent."""
    from ray import tune

    cfg = setup.base_config.with_overrides(params)
    if setup.compile_cache:
        use_compile_cache(setup.compile_cache)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    features = load_features(setup.features_path)
    validation = _validation(features, setup.tune_machines)
    tracker, run_id = _start_run(setup, cfg, trial_id)
    trial_dir = _trial_folder(context)
    validate_epoch = EpochValidator(
        setup, cfg, trial_id, run_id, str(trial_dir), tracker=tracker, validation=validation,
        notes=notes,
    )  # fmt: skip
    try:
        with system_metrics(setup.tracking_uri, run_id, setup.system_metrics_s):
            if cfg.scoring.family == "reference":
                final = _run_reference(cfg, validate_epoch, trial_dir)
            else:
                final = _run_training(
                    cfg, setup, features, validate_epoch, tracker, run_id, trial_dir
                )
    except Exception as exc:
        tracker.set_tags(run_id, {"asd.error": str(exc)[:5000]})
        tracker.finish(run_id, status="FAILED")
        raise
    tracker.finish(run_id, status="FINISHED")
    return final


@dataclass
class FinalReport:
    """A trial's last row and checkpoint folder, reported once everything else is closed."""

    row: dict[str, Any]
    checkpoint: Path
    scratch: Path
    """Removed after the report (Tune copies the checkpoint into its storage during it)."""

    def send(self) -> None:
        """``tune.report`` the row with its checkpoint, then remove the scratch folder."""
        from ray import tune

        try:
            tune.report(self.row, checkpoint=tune.Checkpoint.from_directory(str(self.checkpoint)))
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


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


def _run_reference(
    cfg: Config, validate_epoch: EpochValidator, trial_dir: Path
) -> FinalReport | None:
    """A trial of the untrained reference: nothing to train; its last checkpoint is its config.

    It still reports once per epoch (the same figures: the reference does not change), so
    ASHA's rungs compare encoder trials against it at every epoch like any other trial. The
    last report carries a checkpoint holding only ``config.json``: the sweep rebuilds a
    winning reference from it, wherever the trial ran.
    """
    from ray import tune

    for epoch in range(1, cfg.train.epochs + 1):
        row = validate_epoch(epoch, {}, None)
        if epoch < cfg.train.epochs:
            tune.report(row)
            continue
        scratch = Path(tempfile.mkdtemp(prefix=f"asd-{validate_epoch.trial_id}-"))
        shutil.copy2(trial_dir / "artifacts" / CONFIG_FILE, scratch / CONFIG_FILE)
        return FinalReport(row, scratch, scratch)
    return None


def _run_training(
    cfg: Config,
    setup: TrialSetup,
    features: FeatureSet,
    validate_epoch: EpochValidator,
    tracker: Tracker,
    run_id: str,
    trial_dir: Path,
) -> FinalReport | None:
    """Train the encoder (one process or data parallel), resuming from Tune's checkpoint.

    Every epoch but the last is reported at once; the last one is returned (see run_trial).
    """
    from ray import tune

    # Checkpoints live in a scratch folder (Tune copies each reported one into the sweep's
    # storage); final artifacts go to the trial folder, which outlives MLflow outages.
    scratch = Path(tempfile.mkdtemp(prefix=f"asd-{validate_epoch.trial_id}-"))
    ckpt_dir = scratch / "checkpoints"
    ckpt_dir.mkdir()
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            for item in Path(folder).iterdir():
                shutil.copy2(item, ckpt_dir / item.name)
        tracker.set_tags(run_id, {"asd.resumed_from_checkpoint": "true"})
    final: list[FinalReport] = []

    def validate_and_checkpoint(epoch: int, metrics: dict[str, float], encoder: Encoder) -> None:
        row = validate_epoch(epoch, metrics, encoder)
        if epoch < cfg.train.epochs:
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))
            return
        # The winner travels in its last checkpoint, through Tune's (shared) storage:
        # the encoder and the config its detector is rebuilt from.
        for file in (ENCODER_FILE, CONFIG_FILE):
            done = trial_dir / "artifacts" / file
            if done.is_file():
                shutil.copy2(done, ckpt_dir / file)
        final.append(FinalReport(row, ckpt_dir, scratch))

    try:
        trial_id = validate_epoch.trial_id
        _train(
            setup,
            cfg,
            trial_id,
            run_id,
            trial_dir,
            ckpt_dir,
            restored,
            features,
            validate_and_checkpoint,
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if not final:
        shutil.rmtree(scratch, ignore_errors=True)
        return None
    return final[-1]


def _train(
    setup: TrialSetup,
    cfg: Config,
    trial_id: str,
    run_id: str,
    trial_dir: Path,
    ckpt_dir: Path,
    restored: Checkpoint | None,
    features: FeatureSet,
    on_epoch: Callable[[int, dict[str, float], Encoder], None],
) -> None:
    """Train one trial's encoder: in this process, or data parallel on Ray Train workers."""
    if setup.workers_per_trial > 1:
        # Rank 0 of the worker group runs a fresh EpochValidator (its own tracker
        # and validation set); Ray Train keeps this trial's checkpoints in the trial
        # folder and resumes from them when Tune retries or restores the trial.
        train_data_parallel(
            cfg,
            setup.features_path,
            workers=setup.workers_per_trial,
            use_gpu=setup.use_gpu,
            report=EpochValidator(setup, cfg, trial_id, run_id, str(trial_dir)),
            storage_path=trial_dir,
            name="train",
            cpus_per_worker=setup.cpus_per_worker,
            resume_from=ckpt_dir if restored is not None else None,
            compile_cache=setup.compile_cache,
        )
    else:
        train_encoder(  # it picks the normal train clips itself
            cfg,
            features,
            device=setup.device,
            report=on_epoch,
            checkpoint_dir=ckpt_dir,
            progress=setup.verbose,
        )


@dataclass
class EpochValidator:
    """One trial's per-epoch work: validate, log to MLflow, return the row Tune gets.

    Plain settings until first called (the tracker and validation features open lazily), so
    a data-parallel trial pickles it to its rank-0 Ray Train worker, which cannot call
    ``tune.report`` and returns the row for Ray Train to forward instead.
    """

    setup: TrialSetup
    cfg: Config
    trial_id: str
    run_id: str
    trial_dir: str
    tracker: Tracker | None = None
    validation: FeatureSet | None = None
    timings: dict[str, float] = field(default_factory=lambda: {"train_s": 0.0, "eval_s": 0.0})
    references: dict[tuple[str, ...], Evaluation] = field(default_factory=dict)
    """The reference's evaluation per scorer set: it never changes, so it is computed once."""
    epoch_start: float = field(default_factory=time.time)
    notes: TrialNotes | None = None
    """The trial's collected warnings, logged as notes.txt with its last epoch."""

    def __call__(
        self, epoch: int, metrics: dict[str, float], encoder: Encoder | None
    ) -> dict[str, Any]:
        """Validate ``encoder`` (None: a reference trial) after ``epoch``; log; Tune's row."""
        setup, cfg = self.setup, self.cfg
        if self.tracker is None:
            self.tracker = Tracker(
                setup.tracking_uri, setup.experiment, journal_dir=Path(setup.journal_dir)
            )
        if self.validation is None:
            self.validation = _validation(load_features(setup.features_path), setup.tune_machines)
        if setup.epoch_hook:
            load_epoch_hook(setup.epoch_hook)(self.trial_id, epoch, self.trial_dir)
        self.timings["train_s"] += time.time() - self.epoch_start
        eval_start = time.time()
        last = epoch >= cfg.train.epochs
        work = Path(self.trial_dir) / "artifacts"
        work.mkdir(parents=True, exist_ok=True)
        evaluation, scorer = self._evaluate(encoder, last, work)
        row = {f"train.{k}": float(v) for k, v in metrics.items() if _is_number(v)}
        row[OBJECTIVE] = evaluation.by_estimator[scorer].summary["hmean"]
        if last:
            row.update(evaluation.metrics())
            row.update(_reference_row(evaluation, cfg.scoring.estimator))
            _log_final(self.tracker, self.run_id, evaluation, encoder, cfg, setup, work)
            if setup.verbose:  # the default console has the trial's line from the driver
                print(f"trial {self.trial_id}: {_versus_line(row, cfg)}", file=sys.stderr)
            self._log_notes(work)
        self.timings["eval_s"] += time.time() - eval_start
        row.update({f"time.{k}": v for k, v in self.timings.items()})
        self.tracker.log_metrics(self.run_id, row, step=epoch)
        if last:
            # Tune may stop this function inside the last report (ASHA's max_t): close now.
            self.tracker.finish(self.run_id, status="FINISHED")
        self.epoch_start = time.time()
        # Tune gets the headline figures; per-machine tables live in MLflow only.
        headline = {k: v for k, v in row.items() if _is_headline(k)}
        return {
            **headline,
            "epoch": epoch,
            "mlflow_run_id": self.run_id,
            "family": cfg.scoring.family,
            "scorer": cfg.scoring.estimator,
        }

    def _log_notes(self, work: Path) -> None:
        """The trial's notes as ``notes.txt`` in its run (nothing when there are none)."""
        if self.notes is None or self.tracker is None or not self.notes.lines:
            return
        path = work / NOTES_FILE
        path.write_text(self.notes.text())
        self.tracker.log_artifact(self.run_id, path)

    def _evaluate(self, encoder: Encoder | None, last: bool, work: Path) -> tuple[Evaluation, str]:
        """(evaluation, scorer the objective reads) of this epoch.

        Before the last epoch only the trial's own scorer is validated (maximum likelihood
        standing in for the slow elliptic envelope), with in-sample thresholds unless fusion
        needs out-of-fold statistics, and without companions; the reference is computed once
        and reused. At the last epoch every scorer, every companion, out-of-fold thresholds.
        """
        assert self.validation is not None  # __call__ loads it first
        cfg = self.cfg
        scorer = cfg.scoring.estimator
        if not last:
            scorer = _FAST_STAND_IN.get(scorer, scorer)
            if cfg.scoring.family != "fusion":
                cfg = cfg.with_overrides({"scoring.threshold_folds": 0})
        estimators = SCORERS if last else (scorer,)
        reference = self.references.get(estimators)
        if reference is None and (last or cfg.scoring.family != "encoder"):
            reference = evaluate_reference(self.validation, cfg, estimators)
            self.references[estimators] = reference
        evaluation = evaluate_detector(
            encoder,
            self.validation,
            cfg,
            estimators=estimators,
            out_dir=work / "evaluation" if last else None,
            device=self.setup.device,
            reference=reference,
            companions=last,
        )
        return evaluation, scorer


def _log_final(
    tracker: Tracker,
    run_id: str,
    evaluation: Evaluation,
    encoder: Encoder | None,
    cfg: Config,
    setup: TrialSetup,
    work: Path,
) -> None:
    """Tables, plots, submission CSVs, the config and the encoder of a trial that ran to the end.

    ``config.json`` describes every trial (a reference trial has no encoder file): the sweep
    rebuilds the winner's detector from it.
    """
    save_evaluation(evaluation, work / "evaluation")
    tracker.log_artifacts(run_id, work / "evaluation", artifact_path="evaluation")
    (work / CONFIG_FILE).write_text(cfg.to_json())
    tracker.log_artifact(run_id, work / CONFIG_FILE, artifact_path="detector")
    if encoder is not None:
        encoder_path = work / ENCODER_FILE
        save_encoder(
            encoder,
            encoder_path,
            cfg,
            {"data_fingerprint": setup.data_fingerprint, "code_version": __version__},
        )
        tracker.log_artifact(run_id, encoder_path, artifact_path="encoder")
    winner = max(evaluation.by_estimator.values(), key=lambda r: r.summary["hmean"])
    tracker.set_tags(run_id, {"asd.best_estimator": winner.estimator})


def _reference_row(evaluation: Evaluation, scorer: str) -> dict[str, float]:
    """The trial's own scorer beside the reference: ``reference.hmean``, ``vs_reference.hmean``.

    ``encoder.hmean`` is the encoder alone (absent in a reference trial): fusion must never
    be the only thing that beats the reference, so the encoder's own figure is always there.
    """
    flat = evaluation.metrics()
    row: dict[str, float] = {}
    for prefix in ("reference", "encoder", "fusion", "vs_reference"):
        key = f"{prefix}.{scorer}.hmean"
        if key in flat:
            row[f"{prefix}.hmean"] = flat[key]
    return row


def _versus_line(row: dict[str, Any], cfg: Config) -> str:
    """One line: the detector beside the untrained reference, with the difference."""
    s = cfg.scoring
    text = f"{s.family} ({s.estimator}) {100 * row[OBJECTIVE]:.2f} %"
    if "reference.hmean" in row:
        text += (
            f" vs untrained reference ({s.reference} log-mel) {100 * row['reference.hmean']:.2f} %"
            f" ({100 * (row[OBJECTIVE] - row['reference.hmean']):+.2f} points)"
        )
    if "encoder.hmean" in row and s.family != "encoder":
        text += f"; encoder alone {100 * row['encoder.hmean']:.2f} %"
    return text


def _is_headline(key: str) -> bool:
    """Summary figures (``ml.hmean``, ``reference.ml.hmean``), not per-machine ones."""
    parts = key.split(".")
    return len(parts) <= 2 or (len(parts) == 3 and parts[0] in COMPANIONS)


def _validation(features: FeatureSet, machines: tuple[str, ...]) -> FeatureSet:
    """The clips of the tuned machine types: what every epoch is validated on."""
    return features.subset(features.index["machine"].isin(list(machines)).to_numpy().nonzero()[0])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
