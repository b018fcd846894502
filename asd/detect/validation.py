"""Per-epoch validation: the cheapest estimate of a trial's objective that still ranks trials.

A sweep validates at ASHA's rungs so ASHA can stop weak trials, but only the last epoch's figure
picks the winner. The per-epoch estimate therefore drops what the ranking does not need:

- thresholds: AUC and pAUC rank the clips' scores, so decision thresholds never move them;
  the estimate fits no out-of-fold refits (``scoring.threshold_folds = 0``);
- scorers: only the trial's own (``scoring.estimator``), with maximum likelihood standing in
  for the slow robust elliptic envelope (the same covariance model, without the robust fit);
- companions: none (the encoder alone and the references beside it are final-epoch figures);
- several members (fusion, ensembles): untrained members keep the final evaluation's
  out-of-fold statistics (scored once, kept in the caller's cache); encoder members are
  standardised by 2-fold refits of their one scorer (a covariance or a neighbour set: cheap
  next to embedding the clips). In-sample
  statistics would be cheaper still but are not faithful: a scorer whose dimension nears its
  section's clip count scores its own clips far lower than new ones, and fusion standardised
  that way ranked the mean and mean_std references the wrong way round.

The embeddings come from :func:`asd.detect.detector.evaluate_detector` (once per epoch, in batches,
on the training device). Everything here goes through that one call, so a new detector
pipeline changes this module in one place. ``tests/test_validation.py`` checks that the
estimate ranks configurations as the full evaluation does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asd.config import ESTIMATORS, Config
from asd.detect.detector import MemberCache, detector_spec, evaluate_detector, reported_scorers
from asd.detect.pipeline import Evaluation

if TYPE_CHECKING:
    from pathlib import Path

    from asd.features import FeatureSet
    from asd.model.encoder import Encoder

_ML, _ELLIPTIC = ESTIMATORS
STAND_IN = {_ELLIPTIC: _ML}
"""Scorers the per-epoch estimate replaces by a faster one of the same model."""
MEMBER_FOLDS = 2
"""Out-of-fold refits per section of each member's scorer when a detector has several."""


def estimate_scorer(cfg: Config) -> str:
    """The one scorer the per-epoch estimate fits: the trial's own, or its stand-in."""
    return STAND_IN.get(cfg.scoring.estimator, cfg.scoring.estimator)


def estimate_config(cfg: Config) -> tuple[Config, int | None]:
    """(``cfg`` as the estimate scores it, folds of its encoder members or None).

    One member: in-sample (AUCs need no thresholds). Several: the untrained members keep
    ``cfg``'s folds (scored once), the encoder's are refitted with few folds every epoch.
    """
    if len(detector_spec(cfg.scoring).members) == 1:
        return cfg.with_overrides({"scoring.threshold_folds": 0}), None
    return cfg, min(MEMBER_FOLDS, cfg.scoring.threshold_folds)


def epoch_estimate(
    encoder: Encoder | None,
    features: FeatureSet,
    cfg: Config,
    device: str = "auto",
    cache: MemberCache | None = None,
) -> tuple[float, Evaluation]:
    """(hmean of the estimate, its evaluation) of the detector ``cfg.scoring`` describes.

    ``cache`` keeps the untrained members' scores between epochs (they never change).
    """
    scorer = estimate_scorer(cfg)
    estimate_cfg, learned_folds = estimate_config(cfg)
    evaluation = evaluate_detector(
        encoder,
        features,
        estimate_cfg,
        estimators=(scorer,),
        device=device,
        companions=False,
        cache=cache,
        learned_folds=learned_folds,
    )
    return evaluation.by_estimator[scorer].summary["hmean"], evaluation


@dataclass(frozen=True)
class EpochValidation:
    """One epoch's validation: the estimate, and the full evaluation when it was due."""

    estimate: float
    """hmean of the per-epoch estimate (:func:`epoch_estimate`)."""
    estimate_s: float
    """Seconds the estimate took."""
    evaluation: Evaluation | None = None
    """Every scorer, every companion, out-of-fold thresholds (None: not due this epoch)."""
    evaluation_s: float = 0.0
    """Seconds the full evaluation took."""


def validate(
    encoder: Encoder | None,
    features: FeatureSet,
    cfg: Config,
    full: bool,
    device: str = "auto",
    cache: MemberCache | None = None,
    out_dir: Path | None = None,
) -> EpochValidation:
    """Validate ``encoder`` (None: an untrained detector); with ``full``, evaluate it fully.

    The full evaluation writes its submission CSVs to ``out_dir`` when given.
    The estimate runs every epoch because ASHA reads it; the full evaluation only when the
    caller says it is due, as it costs every scorer and out-of-fold refits. ``cache`` keeps the
    untrained members' scores (the same every epoch, and for every trial of a sweep).
    """
    began = time.time()
    estimate, _ = epoch_estimate(encoder, features, cfg, device, cache)
    estimate_s = time.time() - began
    if not full:
        return EpochValidation(estimate, estimate_s)
    began = time.time()
    evaluation = evaluate_detector(
        encoder,
        features,
        cfg,
        estimators=reported_scorers(cfg),
        out_dir=out_dir,
        device=device,
        companions=True,
        cache=cache,
    )
    return EpochValidation(estimate, estimate_s, evaluation, time.time() - began)


def validation_set(features: FeatureSet, machines: tuple[str, ...]) -> FeatureSet:
    """The clips of the tuned machine types: what every epoch is validated on."""
    return features.subset(features.index["machine"].isin(list(machines)).to_numpy().nonzero()[0])
