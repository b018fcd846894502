"""Per-epoch validation: the cheapest estimate of a trial's objective that still ranks trials.

A sweep validates every epoch so ASHA can stop weak trials, but only the last epoch's figure
picks the winner. The per-epoch estimate therefore drops what the ranking does not need:

- thresholds: AUC and pAUC rank the clips' scores, so decision thresholds never move them;
  the estimate fits no out-of-fold refits (``scoring.threshold_folds = 0``);
- scorers: only the trial's own (``scoring.estimator``), with maximum likelihood standing in
  for the slow robust elliptic envelope (the same covariance model, without the robust fit);
- companions: none (the encoder alone, the reference and fusion beside it are final-epoch
  figures);
- fusion: the reference never changes, so its out-of-fold statistics (exactly the final
  evaluation's) are computed once per trial; the encoder's come from 2-fold refits of its one
  scorer (a covariance or a neighbour set: cheap next to embedding the clips). In-sample
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
from asd.detector import evaluate_detector, evaluate_reference
from asd.pipeline import Evaluation

if TYPE_CHECKING:
    from asd.encoder import Encoder
    from asd.features import FeatureSet

_ML, _ELLIPTIC = ESTIMATORS
STAND_IN = {_ELLIPTIC: _ML}
"""Scorers the per-epoch estimate replaces by a faster one of the same model."""
FUSION_FOLDS = 2
"""Out-of-fold refits per section of the encoder's scorer in a fusion trial's estimate."""


def estimate_scorer(cfg: Config) -> str:
    """The one scorer the per-epoch estimate fits: the trial's own, or its stand-in."""
    return STAND_IN.get(cfg.scoring.estimator, cfg.scoring.estimator)


def estimate_config(cfg: Config) -> Config:
    """``cfg`` as the estimate scores the encoder: in-sample, or few folds for fusion."""
    folds = 0
    if cfg.scoring.family == "fusion" and cfg.scoring.threshold_folds:
        folds = min(FUSION_FOLDS, cfg.scoring.threshold_folds)
    return cfg.with_overrides({"scoring.threshold_folds": folds})


def needs_reference(cfg: Config) -> bool:
    """Whether the trial's detector itself scores the untrained reference (not a companion)."""
    return cfg.scoring.family != "encoder"


def estimate_reference(
    features: FeatureSet, cfg: Config, full: Evaluation | None = None
) -> Evaluation:
    """The reference's part of the estimate: the estimate's scorer with ``cfg``'s statistics.

    It never changes during training: compute it once per trial, or take it from ``full``, a
    reference evaluation of the same clips and config with every scorer.
    """
    scorer = estimate_scorer(cfg)
    if full is not None and scorer in full.by_estimator:
        return Evaluation({scorer: full.by_estimator[scorer]})
    return evaluate_reference(features, cfg, (scorer,))


def epoch_estimate(
    encoder: Encoder | None,
    features: FeatureSet,
    cfg: Config,
    device: str = "auto",
    reference: Evaluation | None = None,
) -> tuple[float, Evaluation]:
    """(hmean of the estimate, its evaluation) of the detector ``cfg.scoring.family`` names.

    ``reference`` is :func:`estimate_reference` of the same clips and config (computed here
    when the family needs it and none is given).
    """
    if reference is None and needs_reference(cfg):
        reference = estimate_reference(features, cfg)
    scorer = estimate_scorer(cfg)
    evaluation = evaluate_detector(
        encoder,
        features,
        estimate_config(cfg),
        estimators=(scorer,),
        device=device,
        reference=reference,
        companions=False,
    )
    return evaluation.by_estimator[scorer].summary["hmean"], evaluation
