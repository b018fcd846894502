"""The sweep's winner: its encoder from the last checkpoint, held-out scores, registration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from asd.errors import AsdError, redact
from asd.sweep.storage import winner_encoder
from asd.sweep.summary import trial_id_of

if TYPE_CHECKING:
    from asd.sweep.runner import SweepResult, SweepSettings

log = logging.getLogger(__name__)


def winner_encoder_path(results: Any, best: pd.Series, dest: Path) -> Path:
    """The winning trial's encoder, from its last Tune checkpoint (wherever storage is)."""
    for res in results:
        if (res.metrics or {}).get("trial_id") == best["trial_id"] or (
            trial_id_of(res.path) == best["trial_id"]
        ):
            if res.checkpoint is None:  # data-parallel trials keep theirs in Ray Train's storage
                local = Path(best["trial_dir"]) / "artifacts" / "encoder.pt"
                if local.is_file():
                    return local
            return winner_encoder(res, str(best["trial_id"]), dest)
    raise AsdError(f"trial {best['trial_id']} is not among the sweep's results")


def score_holdout(
    encoder_path: Path, features: Any, holdout: tuple[str, ...], settings: SweepSettings
) -> dict[str, float]:
    """Score the winner on machine types whose test labels the search never saw."""
    from asd.encoder import load_encoder
    from asd.pipeline import evaluate_encoder

    encoder, cfg, _ = load_encoder(encoder_path)
    evaluation = evaluate_encoder(encoder, features, cfg, machines=holdout, device=settings.device)
    return {k: v for k, v in evaluation.metrics().items() if k.count(".") == 1}


def register_winner(
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
    estimator = max(("ml", "elliptic"), key=lambda e: scores.get(f"{e}.hmean", float("-inf")))
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
        },
    )
    if settings.promote:
        decision = promote(tracker.tracking_uri, settings.model_name, result.model_version)
        result.promotion = decision.reason
