"""Standardised scores: each detector member's anomaly scores on one scale, per section.

Two members' raw scores live on different scales (a Mahalanobis distance in 512-d is larger
than one in 128-d, a GMM's negative log-likelihood is another unit), so each is standardised
per (machine, section) by the mean and standard deviation of its normal training clips'
scores before an ensemble combines them (:func:`asd.detect.detector.combine`). Those training
scores must be out-of-fold (see :mod:`asd.detect.thresholds`): in-sample ones are shrunk (a model
has
seen its own clips), which would inflate every standardised test score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from asd.errors import AsdError

Key = tuple[str, int]
Stats = dict[Key, tuple[float, float]]


def section_stats(train_scores: dict[Key, np.ndarray]) -> Stats:
    """Per section (mean, std) of normal training scores; a zero spread counts as 1."""
    out: Stats = {}
    for key, scores in train_scores.items():
        scores = np.asarray(scores, dtype=float)
        std = float(scores.std())
        out[key] = (float(scores.mean()), std if std > 0 else 1.0)
    return out


def standardise(scores: np.ndarray, meta: pd.DataFrame, stats: Stats) -> np.ndarray:
    """(N,) ``(score - mean) / std`` with the statistics of each row's (machine, section)."""
    scores = np.asarray(scores, dtype=float)
    keys = list(zip(meta["machine"].astype(str), meta["section"].astype(int), strict=True))
    missing = sorted(set(keys) - set(stats))
    if missing:
        raise AsdError(f"fusion: no training statistics for {', '.join(map(str, missing))}")
    mean = np.array([stats[k][0] for k in keys])
    std = np.array([stats[k][1] for k in keys])
    return (scores - mean) / std
