"""The sweep's winner: its detector rebuilt, scored on held-out machine types, registered.

The winner comes from its trial's last Tune checkpoint (wherever storage is: a shared folder
or a bucket), never from a path into a trial folder on some node. A winner of the
``reference`` family has no encoder: its checkpoint holds only ``config.json``, it is scored
like any other, and only its detector is registered. The whole detector (members, fitted
scorers, thresholds; :mod:`asd.detect.artifact`) is registered as ``asd-detector``, what a server
runs; the encoder of a detector that has one also as ``asd-encoder``. Every registered
version carries the reference's score on the same machine types and scorer, so `asd promote`
can say when a candidate does not beat it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from asd.config import Config
from asd.detect.artifact import fit_detector, save_detector
from asd.detect.detector import detector_spec, evaluate_detector
from asd.detect.pipeline import REFERENCE_COMPANIONS
from asd.errors import AsdError, redact
from asd.features import FeatureSet
from asd.model.encoder import Encoder, load_encoder
from asd.serve.promotion import promote
from asd.serve.registry import (
    HOLDOUT_HMEAN,
    TUNE_HMEAN,
    RegistryTags,
    champion,
    describe_model,
    register_encoder,
)
from asd.sweep.descriptions import model_note, version_note
from asd.sweep.rows import TRIAL_SCORES
from asd.sweep.storage import CONFIG_FILE, ENCODER_FILE, fetch_checkpoint
from asd.sweep.summary import SweepResult, trial_id_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from ray.tune import Result

    from asd.sweep.settings import SweepSettings
    from asd.tracking import Tracker

log = logging.getLogger(__name__)


def winner_artifacts(results: Sequence[Result], best: pd.Series, dest: Path) -> Path:
    """The folder holding the winning trial's ``config.json`` (and ``encoder.pt``)."""
    for res in results:
        if (res.metrics or {}).get("trial_id") == best["trial_id"] or (
            trial_id_of(res.path) == best["trial_id"]
        ):
            if res.checkpoint is None:  # data-parallel trials keep theirs in Ray Train's storage
                local = Path(best["trial_dir"]) / "artifacts"
                if (local / CONFIG_FILE).is_file():
                    return local
            return fetch_checkpoint(res, str(best["trial_id"]), dest)
    raise AsdError(f"trial {best['trial_id']} is not among the sweep's results")


def winner(artifacts: Path, family: str) -> tuple[Encoder | None, Config, Path | None]:
    """(encoder or None, config, encoder file or None) of the best trial's detector.

    A detector without an encoder member (the reference family, log-mel ensembles) left only
    its ``config.json``; every other one left its encoder, which carries its config.
    """
    encoder_path = artifacts / ENCODER_FILE
    if encoder_path.is_file():
        encoder, cfg, _ = load_encoder(encoder_path)
        return encoder, cfg, encoder_path
    config_path = artifacts / CONFIG_FILE
    if not config_path.is_file():
        raise AsdError(f"the best trial left no {CONFIG_FILE} in {artifacts}")
    cfg = Config.from_json(config_path.read_text())
    if detector_spec(cfg.scoring).uses_encoder:
        raise AsdError(f"the best trial ({family} family) left no {ENCODER_FILE} in {artifacts}")
    return None, cfg, None


def score_holdout(
    encoder: Encoder | None,
    cfg: Config,
    features: FeatureSet,
    holdout: tuple[str, ...],
    settings: SweepSettings,
) -> dict[str, float]:
    """Score the winner (and the reference beside it) on machine types the search never saw."""
    evaluation = evaluate_detector(encoder, features, cfg, machines=holdout, device=settings.device)
    flat = evaluation.metrics()
    return {k: v for k, v in flat.items() if k in TRIAL_SCORES}


def register(
    tracker: Tracker,
    result: SweepResult,
    encoder_path: Path,
    settings: SweepSettings,
    data_fp: str,
    tune_machines: tuple[str, ...],
    holdout: tuple[str, ...],
) -> None:
    """Log the winner as an MLflow model, register it, and promote it when asked."""
    assert result.best_run_id is not None  # the runner sets it before registering
    model_uri = tracker.log_encoder(result.best_run_id, encoder_path)
    if model_uri.startswith("models:/pending-"):
        # MLflow went down: the encoder waits in the journal and the registry cannot be reached.
        # Finish the sweep (every result is kept) and say how to register later.
        result.deferred = (
            f"MLflow at {redact(tracker.tracking_uri)} was unreachable, so the winner is not "
            f"registered yet: run `asd sync --name {result.name}`, then "
            f"`asd sweep --name {result.name} --resume` to register it"
            + (" (with --promote to promote it)" if settings.promote else "")
        )
        log.warning(result.deferred)
        return
    # the winner's run may have begun during an outage: from here on name the real run
    result.best_run_id = tracker.run_id(result.best_run_id)
    result.model_version = register_encoder(
        tracker.tracking_uri,
        model_uri,
        settings.model_name,
        tags=(tags := winner_tags(result, data_fp, tune_machines, holdout)),
        description=(note := version_note(result, tags.metric)),
    )
    if settings.promote:
        decision = promote(tracker.tracking_uri, settings.model_name, result.model_version)
        result.promotion = decision.reason
    holder = champion(tracker.tracking_uri, settings.model_name)
    describe_model(
        tracker.tracking_uri,
        settings.model_name,
        model_note(
            settings.model_name,
            result.model_version,
            str(holder.version) if holder is not None else None,
            note,
        ),
    )


def register_winner_detector(
    tracker: Tracker,
    result: SweepResult,
    encoder: Encoder | None,
    cfg: Config,
    features: FeatureSet,
    settings: SweepSettings,
    tags: RegistryTags,
) -> None:
    """Fit the winner's whole detector on every machine of the data and register it.

    The encoder (if any) is frozen; the scorers are fitted on the normal training clips of
    every machine type, held-out ones included, so the served detector answers for all of
    them. ``tags`` are the encoder version's (same metric, data and scorer), so promotion
    compares detectors exactly as it compares encoders.
    """
    from asd.serve.model import DETECTOR_MODEL, register_detector  # MLflow's pyfunc

    if result.deferred:
        return  # MLflow is unreachable: the encoder's deferral says how to finish
    detector = fit_detector(encoder, features, cfg, tags.data_fingerprint, settings.device)
    folder = settings.workdir.resolve() / "winners" / result.name / "detector"
    save_detector(detector, folder)
    version = register_detector(
        tracker.tracking_uri, folder, tags, DETECTOR_MODEL, result.best_run_id
    )
    result.detector_version = version
    if settings.promote:
        decision = promote(tracker.tracking_uri, DETECTOR_MODEL, version)
        before = f"{result.promotion}; " if result.promotion else ""
        result.promotion = f"{before}detector: {decision.reason}"


def winner_tags(
    result: SweepResult, data_fp: str, tune_machines: tuple[str, ...], holdout: tuple[str, ...]
) -> RegistryTags:
    """The version tags of the winner (encoder and detector): what promotion compares."""
    scores = result.holdout_scores or result.tune_scores
    estimator = result.scorer  # the scorer it was tuned with, not one picked on held-out data
    return RegistryTags(
        metric=HOLDOUT_HMEAN if result.holdout_scores else TUNE_HMEAN,
        metric_value=scores[f"{estimator}.hmean"],
        estimator=estimator,
        data_fingerprint=f"{data_fp}:{','.join(tune_machines)}|{','.join(holdout)}",
        reference_metric_value=_reference_score(scores, estimator),
        extra={
            "sweep_id": result.name,
            "trial_id": str(result.best_trial_id),
            "family": result.family,
        },
    )


def _reference_score(scores: dict[str, float], estimator: str) -> float | None:
    """The stronger untrained reference's score on the same group and scorer (`asd promote`)."""
    refs = [scores[k] for n in REFERENCE_COMPANIONS if (k := f"{n}.{estimator}.hmean") in scores]
    return max(refs) if refs else None
