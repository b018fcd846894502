"""Cosine kNN anomaly scores: distance to the nearest normal training embeddings.

A covariance model assumes the normal clips form one ellipsoid per domain; a nearest-neighbour
score does not, which suits embeddings whose normal clips form several clusters (operating
conditions). Per (machine, section) the normal train embeddings are kept as two banks, source
and target; a clip's score is the mean cosine distance to its ``k`` nearest clips in a bank,
the smaller over the two banks (ten target clips are enough for neighbours, not a covariance).
Same contract as :class:`asd.detect.mahalanobis.MahalanobisScorer`: settings in ``__init__``,
``fit``
sets ``attr_`` and returns ``self``, ``score_samples``, ``predict`` and ``decide`` per section.
"""

from __future__ import annotations

import numpy as np

from asd.config import ScoringConfig
from asd.detect.scorer import SectionScorer
from asd.errors import AsdError

Key = tuple[str, int]


class KnnScorer(SectionScorer):
    """Per (machine, section) banks of unit-norm normal train embeddings -> cosine kNN scores.

    Fitted attributes: ``banks_`` (``{(machine, section): {domain: (m, d) unit rows}}``),
    ``thresholds_`` and ``train_scores_`` (as in MahalanobisScorer), ``fallbacks_`` (always
    empty: kNN needs no fallback) and ``n_features_in_``.
    """

    def __init__(
        self,
        k: int = 5,
        threshold_quantile: float = 0.9,
        threshold_folds: int = 0,
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.threshold_quantile = threshold_quantile
        self.threshold_folds = threshold_folds
        self.random_state = random_state

    @classmethod
    def from_config(cls, cfg: ScoringConfig, random_state: int = 0) -> KnnScorer:
        """A scorer with the settings of ``cfg`` (the ``scoring`` section of a Config)."""
        return cls(cfg.knn_k, cfg.threshold_quantile, cfg.threshold_folds, random_state)

    def sections(self) -> list[Key]:
        """The fitted sections."""
        return list(getattr(self, "banks_", {}))

    def _reset(self) -> None:
        self.banks_: dict[Key, dict[str, np.ndarray]] = {}

    def _check_settings(self) -> None:
        if self.k < 1:
            raise AsdError(f"scoring.knn_k must be at least 1, got {self.k}")

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return _unit(x)

    def _fit_section(self, x: np.ndarray, domains: np.ndarray, key: Key) -> str:
        """Keep the section's unit-norm normal clips as one bank per domain."""
        self.banks_[key] = {d: x[domains == d] for d in sorted(set(domains))}
        return ""

    def _score_section(self, key: Key, x: np.ndarray) -> np.ndarray:
        """Mean cosine distance to the k nearest clips of a bank, the nearer bank."""
        per_bank = [knn_distance(x, bank, self.k) for bank in self.banks_[key].values()]
        return np.min(np.stack(per_bank), axis=0)


def knn_distance(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """(n,) mean cosine distance of unit rows ``queries`` (n, d) to their k nearest in ``bank``.

    ``k`` is capped by the bank size (a target bank may hold ten clips).
    """
    k = min(k, len(bank))
    dist = 1.0 - queries @ bank.T  # (n, m) cosine distances of unit vectors
    nearest = np.partition(dist, k - 1, axis=1)[:, :k]  # (n, k) the k smallest, unordered
    return np.maximum(nearest, 0.0).mean(axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row has no direction, so it is an error."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise AsdError(f"{int((norms == 0).sum())} embedding(s) are all zeros: no cosine distance")
    return x / norms
