"""Score fusion: the encoder's and the reference's anomaly scores on one scale, then weighted.

Two scorers' raw scores live on different scales (a Mahalanobis distance in 512-d is larger
than one in 128-d), so each is standardised per (machine, section) by the mean and standard
deviation of its normal training clips' scores, then ``w * z_encoder + (1 - w) * z_reference``.
Those training scores must be out-of-fold (see :mod:`asd.thresholds`): in-sample ones are
shrunk (a model has seen its own clips), which would inflate every standardised test score.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Fusion:
    """A fitted fusion: both scorers' statistics, the weight, and per-section thresholds."""

    weight: float
    """Weight of the encoder's standardised score; the reference gets ``1 - weight``."""
    encoder_stats: Stats
    """Per section (mean, std) of the encoder scorer's out-of-fold training scores."""
    reference_stats: Stats
    """The same for the reference scorer."""
    thresholds: dict[Key, float]
    """Per section: the quantile of the fused training scores."""

    def score(self, encoder: np.ndarray, reference: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """(N,) fused anomaly scores of clips scored by both scorers (rows of ``meta``)."""
        z_enc = standardise(encoder, meta, self.encoder_stats)
        z_ref = standardise(reference, meta, self.reference_stats)
        return self.weight * z_enc + (1.0 - self.weight) * z_ref


def fit_fusion(
    encoder_train: dict[Key, np.ndarray],
    reference_train: dict[Key, np.ndarray],
    weight: float,
    quantile: float,
) -> Fusion:
    """Statistics and thresholds from both scorers' training scores of the same clips.

    ``encoder_train[key]`` and ``reference_train[key]`` hold the same section's normal train
    clips in the same order (both scorers were fitted on the same rows).
    """
    if not 0 <= weight <= 1:
        raise AsdError(f"scoring.fusion_weight must be in [0, 1], got {weight}")
    if set(encoder_train) != set(reference_train):
        raise AsdError("fusion: the encoder and the reference were fitted on different sections")
    enc_stats, ref_stats = section_stats(encoder_train), section_stats(reference_train)
    thresholds: dict[Key, float] = {}
    for key, enc in encoder_train.items():
        ref = reference_train[key]
        if len(enc) != len(ref):
            raise AsdError(f"fusion: {key} has {len(enc)} encoder but {len(ref)} reference scores")
        m_e, s_e = enc_stats[key]
        m_r, s_r = ref_stats[key]
        fused = weight * (enc - m_e) / s_e + (1.0 - weight) * (ref - m_r) / s_r
        thresholds[key] = float(np.quantile(fused, quantile))
    return Fusion(weight, enc_stats, ref_stats, thresholds)
