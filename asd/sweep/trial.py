"""One Ray Tune trial: train the encoder, validate every epoch, score with every scorer.

Runs inside a Ray worker. Per epoch it reports a cheap estimate of the validation score (the
official hmean of the trial's detector on the tuning machines' test clips, see
:mod:`asd.detect.validation`) to Tune, which ASHA uses to stop weak trials, and logs the headline
metrics to the trial's MLflow child run in one batch. The full evaluation (every scorer,
out-of-fold thresholds, the untrained reference beside the detector: ``reference.*``,
``vs_reference.*``) runs at the last epoch, and every ``validate_every``-th epoch when asked;
the last one also logs tables (per machine type and section: :mod:`asd.tracking.figures`), a
description, plots, submission CSVs and the encoder. A trial of the ``reference`` family
trains nothing: it is evaluated once and reports one result.
"""

from __future__ import annotations

import gc
import importlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asd import __version__
from asd.config import Config
from asd.detect.detector import MemberCache, detector_spec, evaluate_detector, reported_scorers
from asd.detect.pipeline import (
    COMPANION_PREFIXES,
    REFERENCE_COMPANIONS,
    Evaluation,
    metric_key,
    save_evaluation,
    train_encoder,
)
from asd.detect.validation import epoch_estimate
from asd.errors import AsdError
from asd.features import FeatureSet, load_features
from asd.model.compilation import use_compile_cache
from asd.model.encoder import Encoder, save_encoder
from asd.sweep.notes import NOTES_FILE, TrialNotes, collect_notes
from asd.sweep.parallel import train_data_parallel
from asd.sweep.rows import ESTIMATE, OBJECTIVE, TIMINGS, Timings, TrialRow, headline
from asd.sweep.storage import CONFIG_FILE, ENCODER_FILE
from asd.tracking import TAG_SWEEP, Tracker
from asd.tracking.figures import log_epoch, log_figures
from asd.tracking.system import system_metrics

if TYPE_CHECKING:
    from ray.tune import Checkpoint, TuneContext

# Ray stays a lazy import (``from ray import tune`` inside the functions that run in a Tune
# worker): the driver imports this module for TrialSetup before Ray is initialised.

log = logging.getLogger(__name__)




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

    began = time.time()
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
    validate_epoch.timings["setup_s"] = time.time() - began  # features, MLflow run, folder
    final: FinalReport | None
    try:
        with system_metrics(setup.tracking_uri, run_id, setup.system_metrics_s):
            if not detector_spec(cfg.scoring).uses_encoder:
                final = _run_reference(validate_epoch, trial_dir)
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


def _run_reference(validate_epoch: EpochValidator, trial_dir: Path) -> FinalReport:
    """A trial of the untrained reference: nothing to train, so one evaluation, one report.

    The report is the trial's last (Tune marks it finished; ASHA, which compares trials at
    later epochs, never stops it) and carries a checkpoint holding only ``config.json``: the
    sweep rebuilds a winning reference from it, wherever the trial ran.
    """
    row = validate_epoch(0, {}, None, last=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"asd-{validate_epoch.trial_id}-"))
    shutil.copy2(trial_dir / "artifacts" / CONFIG_FILE, scratch / CONFIG_FILE)
    return FinalReport(row, scratch, scratch)


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
        began = time.time()
        last = epoch >= cfg.train.epochs
        if last:
            # The winner travels in its last checkpoint, through Tune's (shared) storage:
            # the encoder and the config its detector is rebuilt from.
            for file in (ENCODER_FILE, CONFIG_FILE):
                done = trial_dir / "artifacts" / file
                if done.is_file():
                    shutil.copy2(done, ckpt_dir / file)
            final.append(FinalReport(row, ckpt_dir, scratch))  # sent by run_trial, last
            return
        if due_at(epoch, setup.checkpoint_every):
            # train() wrote last.pt for this epoch: the checkpoint resumes after it
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))
        else:
            tune.report(row)
        validate_epoch.reported(began)

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
            checkpoint_every=setup.checkpoint_every,
        )


def due_at(epoch: int, every: int) -> bool:
    """Whether ``epoch`` (1-based) is one of every ``every``-th (0: none; the last is extra)."""
    return every > 0 and epoch % every == 0



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
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMINGS, 0.0))
    notes: TrialNotes | None = None
    """The trial's collected warnings, logged as notes.txt with its last epoch."""
    epoch_start: float = field(default_factory=time.time)

    def __call__(
        self,
        epoch: int,
        metrics: dict[str, float],
        encoder: Encoder | None,
        last: bool | None = None,
    ) -> dict[str, Any]:
        """Validate ``encoder`` (None: a reference trial) after ``epoch``; log; Tune's row.

        ``last`` (default: ``epoch`` is the config's last) runs the full evaluation and logs
        the trial's artifacts; so does every ``validate_every``-th epoch, without artifacts.
        """
        setup, cfg = self.setup, self.cfg
        self._open()
        if setup.epoch_hook:
            load_epoch_hook(setup.epoch_hook)(self.trial_id, epoch, self.trial_dir)
        if encoder is not None:  # a reference trial trains nothing
            self.timings["train_s"] += time.time() - self.epoch_start
        last = epoch >= cfg.train.epochs if last is None else last
        row = {f"train.{k}": float(v) for k, v in metrics.items() if _is_number(v)}
        row[OBJECTIVE] = row[ESTIMATE] = self._timed("validate_s", self._estimate, encoder)
        if last or due_at(epoch, setup.validate_every):
            work = Path(self.trial_dir) / "artifacts"
            work.mkdir(parents=True, exist_ok=True)
            evaluation = self._timed("final_s", self._evaluate, encoder, last, work)
            row.update(evaluation.metrics())
            row.update(_reference_row(evaluation, cfg.scoring.estimator))
            if last:
                row[OBJECTIVE] = evaluation.by_estimator[cfg.scoring.estimator].summary["hmean"]
                self._timed("log_s", self._log_final, evaluation, encoder, work)
                if setup.verbose:  # the default console has the trial's line from the driver
                    line = f"trial {self.trial_id}: {_versus_line(row, cfg)}"
                    print(line, file=sys.stderr, flush=True)
        self.timings["eval_s"] = self.timings["validate_s"] + self.timings["final_s"]
        objective, estimate = row.pop(OBJECTIVE), row.pop(ESTIMATE)
        reported = TrialRow(
            epoch=epoch, final=last, run_id=self.run_id, family=cfg.scoring.family,
            scorer=cfg.scoring.estimator, objective=objective, estimate=estimate,
            figures=headline(row), timings=Timings(**self.timings),
        )  # fmt: skip
        self._timed("log_s", self._log, reported.metrics(), epoch, last)
        self.epoch_start = time.time()
        # Tune gets the headline figures; per-machine tables live in MLflow only.
        return reported.to_tune()

    def reported(self, began: float) -> None:
        """After Tune took this epoch's row (and checkpoint) from ``began``: not training time."""
        self.timings["checkpoint_s"] += time.time() - began
        self.epoch_start = time.time()

    def _open(self) -> None:
        """The tracker and the validation features, on first use."""
        setup = self.setup
        if self.tracker is None:
            self.tracker = Tracker(
                setup.tracking_uri, setup.experiment, journal_dir=Path(setup.journal_dir)
            )
        if self.validation is None:
            self.validation = _validation(load_features(setup.features_path), setup.tune_machines)

    def _timed(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        began = time.time()
        try:
            return fn(*args)
        finally:
            self.timings[key] += time.time() - began

    def _log_final(self, evaluation: Evaluation, encoder: Encoder | None, work: Path) -> None:
        assert self.tracker is not None  # _open made it
        _log_final(self.tracker, self.run_id, evaluation, encoder, self.cfg, self.setup, work)
        if self.notes is not None and self.notes.lines:  # the trial's notes, in its run
            (work / NOTES_FILE).write_text(self.notes.text())
            self.tracker.log_artifact(self.run_id, work / NOTES_FILE)

    def _log(self, row: dict[str, Any], epoch: int, last: bool) -> None:
        assert self.tracker is not None  # _open made it
        log_epoch(self.tracker, self.run_id, row, epoch)  # headline figures; tables at the end
        if last:
            # Tune may stop this function inside the last report (ASHA's max_t): close now.
            self.tracker.finish(self.run_id, status="FINISHED")

    def _estimate(self, encoder: Encoder | None) -> float:
        """The per-epoch estimate of the objective (:mod:`asd.detect.validation`)."""
        assert self.validation is not None  # _open loaded it
        value, _ = epoch_estimate(
            encoder,
            self.validation,
            self.cfg,
            self.setup.device,
            _untrained_cache(self.cfg, self.setup),
        )
        return value

    def _evaluate(self, encoder: Encoder | None, last: bool, work: Path) -> Evaluation:
        """The full evaluation: every scorer, every companion, out-of-fold thresholds.

        The reference's part is the same for every trial of the sweep with the same scoring
        settings: a warm worker reuses it (:func:`_untrained_cache`).
        """
        assert self.validation is not None  # _open loaded it
        return evaluate_detector(
            encoder,
            self.validation,
            self.cfg,
            estimators=reported_scorers(self.cfg),
            out_dir=work / "evaluation" if last else None,
            device=self.setup.device,
            companions=True,
            cache=_untrained_cache(self.cfg, self.setup),
        )


_UNTRAINED: dict[str, MemberCache] = {}
"""Untrained members' scores this worker computed, per data set (a few at most)."""


def _untrained_cache(cfg: Config, setup: TrialSetup) -> MemberCache:
    """The untrained members' cache of this trial's validation clips, shared in a worker.

    Keyed by the data (fingerprint, features, machines); each entry inside is keyed by the
    member, its scorer and every scoring setting its scores depend on, so a reused actor
    never serves another sweep's or another setting's scores.
    """
    key = repr((setup.data_fingerprint, setup.features_path, setup.tune_machines, cfg.features))
    if key not in _UNTRAINED:
        if len(_UNTRAINED) >= 4:
            _UNTRAINED.pop(next(iter(_UNTRAINED)))
        _UNTRAINED[key] = {}
    return _UNTRAINED[key]


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
    log_figures(tracker, run_id, evaluation, cfg)
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

    ``encoder.hmean`` is the encoder alone beside a detector that combines it with untrained
    members (fusion, ensembles): a user must see whether the learned part earns its cost.
    """
    flat = evaluation.metrics()
    row: dict[str, float] = {}
    for prefix in COMPANION_PREFIXES:
        key = metric_key(prefix, scorer)
        if key in flat:
            row[metric_key(prefix)] = flat[key]
    return row


def _versus_line(row: dict[str, Any], cfg: Config) -> str:
    """One line: the detector beside the stronger untrained reference, with the difference."""
    s = cfg.scoring
    text = f"{s.family} ({s.estimator}) {100 * row[OBJECTIVE]:.2f} %"
    refs = {k: row[metric_key(k)] for k in REFERENCE_COMPANIONS if metric_key(k) in row}
    if refs:
        name, value = max(refs.items(), key=lambda kv: kv[1])
        label = "clip-mean" if name == "reference" else "clip mean+std"
        text += (
            f" vs untrained {label} log-mel {100 * value:.2f} %"
            f" ({100 * (row[OBJECTIVE] - value):+.2f} points)"
        )
    if metric_key("encoder") in row and s.family != "encoder":
        text += f"; encoder alone {100 * row[metric_key('encoder')]:.2f} %"
    return text


def _validation(features: FeatureSet, machines: tuple[str, ...]) -> FeatureSet:
    """The clips of the tuned machine types: what every epoch is validated on."""
    return features.subset(features.index["machine"].isin(list(machines)).to_numpy().nonzero()[0])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
