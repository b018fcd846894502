"""Out-of-fold training scores: what a section's normal clips score when they were not fitted.

A scorer fitted on a clip scores that clip lower than it would score a new normal clip (a
covariance or a neighbour set has "seen" it; kNN even finds the clip itself at distance 0).
A decision threshold taken as a quantile of in-sample scores therefore flags far more than
``1 - quantile`` of new normal clips (100 % on real valve audio). K-fold refits per section
give every training clip a score from a model that never saw it: their quantile holds on
unseen clips, and their mean and spread standardise scores for fusion.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.base import clone

log = logging.getLogger(__name__)

Key = tuple[str, int]


class SectionScorer(Protocol):
    """What out-of-fold refits need: the scikit-learn contract of our scorers."""

    threshold_folds: int
    random_state: int

    def fit(self, embeddings: np.ndarray, meta: pd.DataFrame) -> SectionScorer:
        """Fit one model per (machine, section) on the normal train rows; return self."""
        ...

    def score_samples(self, embeddings: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """(N,) anomaly scores, higher = more anomalous."""
        ...


def fold_of(domains: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(n,) fold number per clip, stratified by domain so every fold keeps both domains' share.

    Within each domain the clips are shuffled (``seed``) and dealt round-robin, so fold sizes
    differ by at most one per domain.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(len(domains), dtype=int)
    for domain in sorted(set(domains.tolist())):
        rows = np.flatnonzero(domains == domain)
        out[rng.permutation(rows)] = np.arange(len(rows)) % folds
    return out


def out_of_fold_scores(
    scorer: SectionScorer, x: np.ndarray, meta: pd.DataFrame, folds: int
) -> np.ndarray:
    """(n,) score of every clip of ``x`` (one section's normal train clips) by a refit without it.

    ``scorer`` is cloned with ``threshold_folds=0`` for each of ``folds`` refits. Sections too
    small for it (fewer than 3 clips, so a refit would see < 2) keep in-sample scores, with a
    warning.
    """
    n = len(x)
    folds = min(folds, n)
    if folds < 2 or n < 3:
        log.warning("%d normal train clip(s): thresholds use in-sample scores", n)
        return np.asarray(
            clone(scorer).set_params(threshold_folds=0).fit(x, meta).score_samples(x, meta)
        )
    fold = fold_of(meta["domain"].astype(str).to_numpy(), folds, scorer.random_state)
    scores = np.empty(n)
    for f in range(folds):
        held = fold == f
        if not held.any():
            continue
        part = clone(scorer).set_params(threshold_folds=0)
        part.fit(x[~held], meta.loc[~held].reset_index(drop=True))
        scores[held] = part.score_samples(x[held], meta.loc[held].reset_index(drop=True))
    return scores


def section_train_scores(
    scorer: SectionScorer, x: np.ndarray, meta: pd.DataFrame, groups: dict[Key, np.ndarray]
) -> dict[Key, np.ndarray]:
    """Per section, its training clips' scores: out-of-fold when ``scorer.threshold_folds``.

    ``groups`` maps each (machine, section) to its row positions in ``x``/``meta`` (the normal
    train clips the fitted ``scorer`` used); in-sample scores come from ``scorer`` itself.
    """
    out: dict[Key, np.ndarray] = {}
    for key, rows in groups.items():
        part = meta.iloc[rows].reset_index(drop=True)
        if scorer.threshold_folds:
            out[key] = out_of_fold_scores(scorer, x[rows], part, scorer.threshold_folds)
        else:
            out[key] = np.asarray(scorer.score_samples(x[rows], part))
    return out
