"""The sweep's winner: its detector rebuilt, scored on held-out machine types, registered.

A winner of the ``reference`` family has no encoder: it is scored like any other, and
nothing is registered (``SweepResult.note`` says so). Every registered version carries the
reference's score on the same machine types and scorer, so `asd promote` can say when a
candidate does not beat it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asd.config import Config
from asd.errors import AsdError, redact
from asd.sweep.summary import TRIAL_SCORES, SweepResult

if TYPE_CHECKING:
    from asd.sweep.runner import SweepSettings

log = logging.getLogger(__name__)


def winner(artifacts: Path) -> tuple[Any, Config, Path | None]:
    """(encoder or None, config, encoder file or None) of the best trial's detector."""
    from asd.encoder import load_encoder

    encoder_path = artifacts / "encoder.pt"
    if encoder_path.is_file():
        encoder, cfg, _ = load_encoder(encoder_path)
        return encoder, cfg, encoder_path
    config_path = artifacts / "config.json"
    if not config_path.is_file():
        raise AsdError(f"the best trial left neither encoder.pt nor config.json in {artifacts}")
    return None, Config.from_json(config_path.read_text()), None


def score_holdout(
    encoder: Any, cfg: Config, features: Any, holdout: tuple[str, ...], settings: SweepSettings
) -> dict[str, float]:
    """Score the winner (and the reference beside it) on machine types the search never saw."""
    from asd.detector import evaluate_detector

    evaluation = evaluate_detector(encoder, features, cfg, machines=holdout, device=settings.device)
    flat = evaluation.metrics()
    return {k: v for k, v in flat.items() if k in TRIAL_SCORES}


def register(
    tracker: Any,
    result: SweepResult,
    encoder_path: Path,
    settings: SweepSettings,
    data_fp: str,
    tune_machines: tuple[str, ...],
    holdout: tuple[str, ...],
) -> None:
    """Log the winner as an MLflow model, register it, and promote it when asked."""
    from asd.registry import promote, register_encoder

    scores = result.holdout_scores or result.tune_scores
    estimator = result.scorer  # the scorer it was tuned with, not one picked on held-out data
    metric = ("holdout" if result.holdout_scores else "tune") + ".hmean"
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
    result.model_version = register_encoder(
        tracker.tracking_uri,
        model_uri,
        settings.model_name,
        tags={
            "metric": metric,
            "metric_value": f"{scores[f'{estimator}.hmean']:.6f}",
            "estimator": estimator,
            "data_fingerprint": f"{data_fp}:{','.join(tune_machines)}|{','.join(holdout)}",
            "sweep_id": result.name,
            "trial_id": str(result.best_trial_id),
            "family": result.family,
            **_reference_tags(scores, estimator),
        },
    )
    if settings.promote:
        decision = promote(tracker.tracking_uri, settings.model_name, result.model_version)
        result.promotion = decision.reason


def _reference_tags(scores: dict[str, float], estimator: str) -> dict[str, str]:
    """The untrained reference's score on the same group and scorer (for `asd promote`)."""
    key = f"reference.{estimator}.hmean"
    return {"reference_metric_value": f"{scores[key]:.6f}"} if key in scores else {}
