"""Cosine kNN anomaly scores: distance to the nearest normal training embeddings.

A covariance model assumes the normal clips form one ellipsoid per domain; a nearest-neighbour
score does not, which suits embeddings whose normal clips form several clusters (operating
conditions). Per (machine, section) the normal train embeddings are kept as two banks, source
and target; a clip's score is the mean cosine distance to its ``k`` nearest clips in a bank,
the smaller over the two banks (ten target clips are enough for neighbours, not a covariance).
Same contract as :class:`asd.scoring.MahalanobisScorer`: settings in ``__init__``, ``fit``
sets ``attr_`` and returns ``self``, ``score_samples``, ``predict`` and ``decide`` per section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from asd.config import ScoringConfig
from asd.errors import AsdError
from asd.scoring import _check_embeddings, _group_rows, _keys, _known
from asd.thresholds import section_train_scores

Key = tuple[str, int]


class KnnScorer(BaseEstimator):
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

    def fit(self, embeddings: np.ndarray, meta: pd.DataFrame) -> KnnScorer:
        """Keep each section's normal train clips (``label``/``split`` filter as in scoring)."""
        if self.k < 1:
            raise AsdError(f"scoring.knn_k must be at least 1, got {self.k}")
        if not 0 < self.threshold_quantile < 1:
            raise AsdError(
                f"scoring.threshold_quantile must be in (0, 1), got {self.threshold_quantile}"
            )
        if self.threshold_folds < 0 or self.threshold_folds == 1:
            raise AsdError(
                f"scoring.threshold_folds must be 0 or at least 2, got {self.threshold_folds}"
            )
        x = _unit(_check_embeddings(embeddings, meta, "fit"))
        keys = _keys(meta, need_domain=True)
        use = np.ones(len(meta), dtype=bool)
        if "label" in meta.columns:
            use &= meta["label"].astype(str).to_numpy() == "normal"
        if "split" in meta.columns:
            use &= meta["split"].astype(str).to_numpy() == "train"
        domains = meta["domain"].astype(str).to_numpy()
        self.n_features_in_ = x.shape[1]
        self.banks_: dict[Key, dict[str, np.ndarray]] = {}
        self.fallbacks_: dict[Key, str] = {}
        fitted: dict[Key, np.ndarray] = {}
        for key, positions in sorted(_group_rows(keys).items()):
            rows = positions[use[positions]]
            if len(rows) < 1:
                raise AsdError(f"machine {key[0]} section {key[1]:02d}: no normal train clips")
            self.banks_[key] = {d: x[rows[domains[rows] == d]] for d in sorted(set(domains[rows]))}
            fitted[key] = rows
        self.train_scores_ = section_train_scores(
            self, np.asarray(embeddings, dtype=np.float64), meta.reset_index(drop=True), fitted
        )
        self.thresholds_ = {
            key: float(np.quantile(s, self.threshold_quantile))
            for key, s in self.train_scores_.items()
        }
        return self

    def score_samples(self, embeddings: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """Anomaly scores (N,): mean cosine distance to the k nearest, nearer domain bank."""
        if not hasattr(self, "banks_"):
            raise AsdError("KnnScorer is not fitted: call fit(embeddings, meta) first")
        x = _unit(_check_embeddings(embeddings, meta, "score"))
        if x.shape[1] != self.n_features_in_:
            raise AsdError(
                f"embeddings have {x.shape[1]} dimensions, the scorer was fitted on "
                f"{self.n_features_in_}"
            )
        scores = np.empty(len(x))
        for key, rows in _group_rows(_keys(meta, need_domain=False)).items():
            if key not in self.banks_:
                raise AsdError(
                    f"machine {key[0]} section {key[1]:02d} was not seen when fitting "
                    f"(known: {_known(self.banks_)})"
                )
            per_bank = [knn_distance(x[rows], bank, self.k) for bank in self.banks_[key].values()]
            scores[rows] = np.min(np.stack(per_bank), axis=0)
        return scores

    def predict(self, embeddings: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """0/1 decisions (N,), 1 = anomalous (DCASE's ``decision_result`` convention)."""
        return self.decide(self.score_samples(embeddings, meta), meta)

    def decide(self, scores: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """0/1 decisions (N,): 1 where the score exceeds its section's threshold."""
        scores = np.asarray(scores, dtype=float)
        if scores.shape != (len(meta),):
            raise AsdError(f"scores have shape {scores.shape}, meta has {len(meta)} rows")
        out = np.zeros(len(scores), dtype=int)
        for key, rows in _group_rows(_keys(meta, need_domain=False)).items():
            if key not in self.thresholds_:
                raise AsdError(f"machine {key[0]} section {key[1]:02d} was not seen when fitting")
            out[rows] = (scores[rows] > self.thresholds_[key]).astype(int)
        return out


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
