"""A trial's per-epoch work: validate, build the row, hand it to the reports.

:class:`TrialEpochs` is the training loop's ``report`` callback. Each epoch it runs the hook,
validates (:func:`asd.detect.validation.validate`: the estimate at ASHA's rungs and the
checkpoints, where Tune reads it; the full evaluation every ``validate_every``-th epoch and at
the last; other epochs log only their training figures), builds the
:class:`~asd.sweep.rows.TrialRow` and passes it on to ``report``, which the trial composes:
``chain(MlflowLogger(...), TuneReporter(...))``. Each report does one thing; none opens or
closes the trial's MLflow run (the trial does), except on a data-parallel rank-0 worker,
whose trial function Tune may stop before it can (:class:`RankZeroEpochs`).
"""

from __future__ import annotations

import importlib
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from asd import __version__
from asd.config import Config
from asd.detect.detector import MemberCache
from asd.detect.pipeline import (
    COMPANION_PREFIXES,
    REFERENCE_COMPANIONS,
    Evaluation,
    metric_key,
    save_evaluation,
)
from asd.detect.validation import validate, validation_set
from asd.errors import AsdError
from asd.features import FeatureSet, load_features
from asd.model.encoder import Encoder, save_encoder
from asd.sweep.notes import NOTES_FILE, TrialNotes
from asd.sweep.rows import Timings, TrialRow, headline
from asd.sweep.storage import CONFIG_FILE, ENCODER_FILE
from asd.tracking import Tracker
from asd.tracking.figures import log_epoch, log_figures

if TYPE_CHECKING:
    from asd.sweep.trial import TrialSetup

T = TypeVar("T")

EpochHook = Callable[[str, int, str], Any]
"""``hook(trial_id, epoch, trial_dir)``, called first in every epoch's report."""


def load_epoch_hook(spec: str) -> EpochHook:
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
    return func  # type: ignore[no-any-return]


@dataclass
class EpochResult:
    """What one epoch produced, as every report of the chain sees it."""

    row: TrialRow
    """The row Tune gets; its timings are a copy taken when the row was built."""
    evaluation: Evaluation | None
    """The full evaluation when it ran this epoch."""
    encoder: Encoder | None
    timings: Timings
    """The trial's running seconds: a report's own cost goes here (and shows next epoch)."""
    validated: bool = True
    """False on an epoch between ASHA's rungs and checkpoints: MLflow logs its training
    figures, Tune hears nothing (it would read no objective there)."""


Report = Callable[[EpochResult], None]
"""One job done with each epoch's result: log it, report it to Tune."""


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``fn(*args)`` and the seconds it took."""
    began = time.time()
    result = fn(*args)
    return result, time.time() - began


def chain(*reports: Report) -> Report:
    """One report running ``reports`` in order (MLflow before Tune, which may stop the trial)."""

    def report(result: EpochResult) -> None:
        for each in reports:
            each(result)

    return report


def due_at(epoch: int, every: int) -> bool:
    """Whether ``epoch`` (1-based) is one of every ``every``-th (0: none; the last is extra)."""
    return every > 0 and epoch % every == 0


@dataclass
class TrialEpochs:
    """The training loop's ``report(epoch, metrics, encoder)``: validate, row, hand on."""

    cfg: Config
    validation: FeatureSet
    """The tuned machine types' clips (:func:`asd.detect.validation.validation_set`)."""
    trial_id: str
    trial_dir: Path
    run_id: str
    report: Report
    device: str = "auto"
    cache: MemberCache = field(default_factory=dict)
    validate_every: int = 0
    report_at: tuple[int, ...] | None = None
    """Epochs validated and reported besides checkpoints and the last (None: every epoch)."""
    checkpoint_every: int = 0
    hook: EpochHook | None = None
    verbose: bool = False
    timings: Timings = field(default_factory=Timings)
    epoch_start: float = field(default_factory=time.time)

    def __call__(self, epoch: int, metrics: dict[str, float], encoder: Encoder) -> None:
        """The training loop's report: :meth:`step` after each epoch."""
        self.step(epoch, metrics, encoder)

    def step(
        self,
        epoch: int,
        metrics: dict[str, float],
        encoder: Encoder | None,
        last: bool | None = None,
    ) -> TrialRow:
        """Validate ``encoder`` (None: an untrained detector) after ``epoch``; its row.

        ``last`` (default: ``epoch`` is the config's last) runs the full evaluation, and the
        reports log the trial's artifacts; so does every ``validate_every``-th epoch, without
        artifacts.
        """
        cfg, timings = self.cfg, self.timings
        if self.hook is not None:
            self.hook(self.trial_id, epoch, str(self.trial_dir))
        if encoder is not None:  # an untrained detector trains nothing
            timings.train_s += time.time() - self.epoch_start
        last = epoch >= cfg.train.epochs if last is None else last
        work = self.trial_dir / "artifacts"
        full = last or due_at(epoch, self.validate_every)
        due = full or self._reported(epoch)  # elsewhere: training figures only, no estimate
        if full:
            work.mkdir(parents=True, exist_ok=True)
        estimate, evaluation = math.nan, None
        if due:
            done = validate(
                encoder, self.validation, cfg, full, self.device, self.cache,
                out_dir=work / "evaluation" if last else None,
            )  # fmt: skip
            estimate, evaluation = done.estimate, done.evaluation
            timings.validate_s += done.estimate_s
            timings.final_s += done.evaluation_s
            timings.eval_s = timings.validate_s + timings.final_s
        figures = headline({f"train.{k}": v for k, v in metrics.items()})
        objective = estimate
        if evaluation is not None:
            figures.update(headline(evaluation.metrics()))
            figures.update(beside_own(evaluation, cfg.scoring.estimator))
            if last:
                objective = evaluation.by_estimator[cfg.scoring.estimator].summary["hmean"]
        row = TrialRow(
            epoch=epoch, final=last, run_id=self.run_id, family=cfg.scoring.family,
            scorer=cfg.scoring.estimator, objective=objective, estimate=estimate,
            figures=figures, timings=replace(timings),
        )  # fmt: skip
        self.report(EpochResult(row, evaluation, encoder, timings, validated=due))
        if last and self.verbose:  # the default console has the trial's line from the driver
            print(f"trial {self.trial_id}: {versus_line(row, cfg)}", file=sys.stderr, flush=True)
        self.epoch_start = time.time()
        return row

    def _reported(self, epoch: int) -> bool:
        """Whether ``epoch`` is one Tune hears of: a rung, a checkpoint (or every epoch)."""
        if self.report_at is None:
            return True
        return epoch in self.report_at or due_at(epoch, self.checkpoint_every)


@dataclass
class MlflowLogger:
    """Logs each epoch's headline figures, and at the last the trial's artifacts.

    Never ends the run: the trial that opened it closes it, once.
    """

    tracker: Tracker
    run_id: str
    cfg: Config
    work: Path
    """Where the artifacts are written before they are logged (the trial's folder)."""
    data_fingerprint: str
    notes: TrialNotes | None = None
    """The trial's collected warnings, logged as notes.txt with its last epoch."""

    def __call__(self, result: EpochResult) -> None:
        """Artifacts first at the last epoch (the row counts their seconds), then the row."""
        if result.row.final and result.evaluation is not None:
            _, seconds = timed(self._log_final, result.evaluation, result.encoder)
            result.row.timings.log_s += seconds
            result.timings.log_s += seconds
        _, seconds = timed(
            log_epoch, self.tracker, self.run_id, result.row.metrics(), result.row.epoch
        )
        result.timings.log_s += seconds

    def _log_final(self, evaluation: Evaluation, encoder: Encoder | None) -> None:
        """Tables, plots, submission CSVs, the config, the encoder and the notes.

        ``config.json`` describes every trial (an untrained one has no encoder file): the
        sweep rebuilds the winner's detector from it.
        """
        tracker, run_id, work = self.tracker, self.run_id, self.work
        save_evaluation(evaluation, work / "evaluation")
        tracker.log_artifacts(run_id, work / "evaluation", artifact_path="evaluation")
        log_figures(tracker, run_id, evaluation, self.cfg)
        (work / CONFIG_FILE).write_text(self.cfg.to_json())
        tracker.log_artifact(run_id, work / CONFIG_FILE, artifact_path="detector")
        if encoder is not None:
            provenance = {"data_fingerprint": self.data_fingerprint, "code_version": __version__}
            save_encoder(encoder, work / ENCODER_FILE, self.cfg, provenance)
            tracker.log_artifact(run_id, work / ENCODER_FILE, artifact_path="encoder")
        winner = max(evaluation.by_estimator.values(), key=lambda r: r.summary["hmean"])
        tracker.set_tags(run_id, {"asd.best_estimator": winner.estimator})
        if self.notes is not None and self.notes.lines:  # the trial's notes, in its run
            (work / NOTES_FILE).write_text(self.notes.text())
            tracker.log_artifact(run_id, work / NOTES_FILE)


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


@dataclass
class TuneReporter:
    """Reports each epoch's row to Tune, with a checkpoint when one is due; keeps the last.

    The last row is kept as :attr:`final`, not sent: Ray may end the worker as soon as a
    trial's final result arrives, so the trial sends it after closing everything else.
    """

    checkpoint_dir: Path
    """Where training writes ``last.pt``; the last checkpoint also gets the winner's files."""
    artifacts: Path
    """The trial's artifacts folder (``encoder.pt``, ``config.json`` at the last epoch)."""
    scratch: Path
    """The trial's scratch folder, removed after the final report."""
    checkpoint_every: int = 0
    final: FinalReport | None = None

    def __call__(self, result: EpochResult) -> None:
        """``tune.report`` the row, or keep it when it is the trial's last."""
        from ray import tune

        if result.row.final:
            # The winner travels in its last checkpoint, through Tune's (shared) storage:
            # the encoder and the config its detector is rebuilt from.
            for file in (ENCODER_FILE, CONFIG_FILE):
                if (self.artifacts / file).is_file():
                    shutil.copy2(self.artifacts / file, self.checkpoint_dir / file)
            self.final = FinalReport(result.row.to_tune(), self.checkpoint_dir, self.scratch)
            return
        if not result.validated:
            return
        began = time.time()
        if due_at(result.row.epoch, self.checkpoint_every):
            # train() wrote last.pt for this epoch: the checkpoint resumes after it
            checkpoint = tune.Checkpoint.from_directory(str(self.checkpoint_dir))
            tune.report(result.row.to_tune(), checkpoint=checkpoint)
        else:
            tune.report(result.row.to_tune())
        result.timings.checkpoint_s += time.time() - began


@dataclass
class RankZeroEpochs:
    """The data-parallel trial's report on its rank-0 Ray Train worker: Tune's row as a dict.

    Plain settings until first called (it is pickled to the worker, which opens its own
    tracker and validation clips). Ray Train forwards the row to Tune, which may stop the
    trial function at the last one before it returns: so here the last epoch ends the run.
    """

    setup: TrialSetup
    cfg: Config
    trial_id: str
    run_id: str
    trial_dir: str
    _epochs: TrialEpochs | None = None

    def __call__(self, epoch: int, metrics: dict[str, float], encoder: Encoder) -> dict[str, Any]:
        """Validate and log this epoch on rank 0; the row Ray Train reports."""
        if self._epochs is None:
            self._epochs = self._open()
        return self._epochs.step(epoch, metrics, encoder).to_tune()

    def _open(self) -> TrialEpochs:
        setup = self.setup
        tracker = Tracker(setup.tracking_uri, setup.experiment, journal_dir=Path(setup.journal_dir))
        work = Path(self.trial_dir) / "artifacts"
        logger = MlflowLogger(tracker, self.run_id, self.cfg, work, setup.data_fingerprint)

        def end_at_last(result: EpochResult) -> None:
            if result.row.final:
                tracker.finish(self.run_id, status="FINISHED")

        return TrialEpochs(
            self.cfg,
            validation_set(load_features(setup.features_path), setup.tune_machines),
            self.trial_id,
            Path(self.trial_dir),
            self.run_id,
            report=chain(logger, end_at_last),
            device=setup.device,
            cache=untrained_cache(setup, self.cfg),
            validate_every=setup.validate_every,
            hook=load_epoch_hook(setup.epoch_hook) if setup.epoch_hook else None,
            verbose=setup.verbose,
        )


_UNTRAINED: dict[str, MemberCache] = {}
"""Untrained members' scores this worker computed, per data set (a few at most)."""


def untrained_cache(setup: TrialSetup, cfg: Config) -> MemberCache:
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


def beside_own(evaluation: Evaluation, scorer: str) -> dict[str, float]:
    """The trial's own scorer beside the companions: ``reference.hmean``, ``vs_reference.hmean``.

    ``encoder.hmean`` is the encoder alone beside a detector that combines it with untrained
    members (fusion, ensembles): a user must see whether the learned part earns its cost.
    """
    flat = evaluation.metrics()
    return {
        metric_key(prefix): flat[metric_key(prefix, scorer)]
        for prefix in COMPANION_PREFIXES
        if metric_key(prefix, scorer) in flat
    }


def versus_line(row: TrialRow, cfg: Config) -> str:
    """One line: the detector beside the stronger untrained reference, with the difference."""
    s = cfg.scoring
    text = f"{s.family} ({s.estimator}) {100 * row.objective:.2f} %"
    refs = {
        k: row.figures[metric_key(k)] for k in REFERENCE_COMPANIONS if metric_key(k) in row.figures
    }
    if refs:
        name, value = max(refs.items(), key=lambda kv: kv[1])
        label = "clip-mean" if name == "reference" else "clip mean+std"
        text += (
            f" vs untrained {label} log-mel {100 * value:.2f} %"
            f" ({100 * (row.objective - value):+.2f} points)"
        )
    encoder = metric_key("encoder")
    if encoder in row.figures and s.family != "encoder":
        text += f"; encoder alone {100 * row.figures[encoder]:.2f} %"
    return text
