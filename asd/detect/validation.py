"""Per-epoch validation: the cheapest estimate of a trial's objective that still ranks trials.

A sweep validates every epoch so ASHA can stop weak trials, but only the last epoch's figure
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

from typing import TYPE_CHECKING

from asd.config import ESTIMATORS, Config
from asd.detect.detector import MemberCache, detector_spec, evaluate_detector
from asd.detect.pipeline import Evaluation

if TYPE_CHECKING:
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
