"""Per-epoch validation: the cheapest estimate of a trial's objective that still ranks trials.

A sweep validates every epoch so ASHA can stop weak trials, but only the last epoch's figure
picks the winner. The per-epoch estimate therefore drops what the ranking does not need:

- thresholds: AUC and pAUC rank the clips' scores, so decision thresholds never move them;
  the estimate fits no out-of-fold refits (``scoring.threshold_folds = 0``);
- scorers: only the trial's own (``scoring.estimator``), with maximum likelihood standing in
  for the slow robust elliptic envelope (the same covariance model, without the robust fit);
- companions: none (the encoder alone and the references beside it are final-epoch figures);
- several members (fusion, ensembles): each member is standardised by 2-fold out-of-fold
  statistics of its one scorer (a covariance or a neighbour set: cheap next to embedding the
  clips), and untrained members are scored once and kept in the caller's cache. In-sample
  statistics would be cheaper still but are not faithful: a scorer whose dimension nears its
  section's clip count scores its own clips far lower than new ones, and fusion standardised
  that way ranked the mean and mean_std references the wrong way round.

The embeddings come from :func:`asd.detector.evaluate_detector` (once per epoch, in batches,
on the training device). Everything here goes through that one call, so a new detector
pipeline changes this module in one place. ``tests/test_validation.py`` checks that the
estimate ranks configurations as the full evaluation does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asd.config import ESTIMATORS, Config
from asd.detector import MemberCache, detector_spec, evaluate_detector
from asd.pipeline import Evaluation

if TYPE_CHECKING:
    from asd.encoder import Encoder
    from asd.features import FeatureSet

_ML, _ELLIPTIC = ESTIMATORS
STAND_IN = {_ELLIPTIC: _ML}
"""Scorers the per-epoch estimate replaces by a faster one of the same model."""
MEMBER_FOLDS = 2
"""Out-of-fold refits per section of each member's scorer when a detector has several."""


def estimate_scorer(cfg: Config) -> str:
    """The one scorer the per-epoch estimate fits: the trial's own, or its stand-in."""
    return STAND_IN.get(cfg.scoring.estimator, cfg.scoring.estimator)


def estimate_config(cfg: Config) -> Config:
    """``cfg`` as the estimate scores it: in-sample, or few folds when members are combined."""
    folds = 0
    if len(detector_spec(cfg.scoring).members) > 1 and cfg.scoring.threshold_folds:
        folds = min(MEMBER_FOLDS, cfg.scoring.threshold_folds)
    return cfg.with_overrides({"scoring.threshold_folds": folds})


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
    evaluation = evaluate_detector(
        encoder,
        features,
        estimate_config(cfg),
        estimators=(scorer,),
        device=device,
        companions=False,
        cache=cache,
    )
    return evaluation.by_estimator[scorer].summary["hmean"], evaluation
