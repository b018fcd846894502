"""The contract every per-section scorer (``ml``, ``elliptic``, ``knn``, ``gmm``) keeps.

A scorer keeps the scikit-learn contract: ``__init__`` stores settings, ``fit`` fits one model
per (machine, section) on the *normal train* rows and returns ``self``, ``score_samples``
gives anomaly scores (higher = more anomalous, DCASE's sign). The shared part lives here
once: which rows fit, the per-section loop, out-of-fold training scores and their quantile
as the decision threshold, and the errors for unseen sections. A subclass says how one
section is fitted (:meth:`SectionScorer._fit_section`) and scored
(:meth:`SectionScorer._score_section`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from asd.config import DOMAIN_STRATEGIES
from asd.detect.thresholds import section_train_scores
from asd.errors import AsdError

Key = tuple[str, int]


class SectionScorer(BaseEstimator):
    """Base of the per-(machine, section) scorers.

    Fitted attributes: ``thresholds_`` (per section, the ``threshold_quantile`` of its normal
    train clips' scores, out-of-fold when ``threshold_folds`` >= 2), ``train_scores_`` (those
    scores in fit order), ``fallbacks_`` (per section, why a fallback model was used) and
    ``n_features_in_``. Subclasses set ``threshold_quantile``, ``threshold_folds`` and
    ``random_state`` in ``__init__``.
    """

    threshold_quantile: float
    threshold_folds: int
    random_state: int
    min_clips = 1
    """Fewest normal train clips one section needs."""

    def fit(self, embeddings: np.ndarray, meta: pd.DataFrame) -> SectionScorer:
        """Fit one model per (machine, section) on the normal train rows; returns ``self``.

        ``embeddings``: (N, d). ``meta``: N rows with ``machine, section, domain``; when it
        also has ``label`` / ``split`` columns only ``label == 'normal'`` / ``split == 'train'``
        rows are used, so a whole index can be passed.
        """
        self._check_common()
        self._check_settings()
        x = self._prepare(check_embeddings(embeddings, meta, "fit"))
        keys = section_keys(meta, need_domain=True)
        use = normal_train_rows(meta)
        domains = meta["domain"].astype(str).to_numpy()
        self.n_features_in_ = x.shape[1]
        self.fallbacks_: dict[Key, str] = {}
        self._reset()
        fitted: dict[Key, np.ndarray] = {}
        for key, positions in sorted(group_rows(keys).items()):
            rows = positions[use[positions]]
            if len(rows) < self.min_clips:
                raise AsdError(
                    f"machine {key[0]} section {key[1]:02d}: {len(rows)} normal train clip(s), "
                    f"need at least {self.min_clips} to fit"
                )
            reason = self._fit_section(x[rows], domains[rows], key)
            if reason:
                self.fallbacks_[key] = reason
            fitted[key] = rows
        self.train_scores_ = section_train_scores(
            self, np.asarray(embeddings, dtype=np.float64), meta.reset_index(drop=True), fitted
        )
        self.thresholds_ = {
            key: float(np.quantile(scores, self.threshold_quantile))
            for key, scores in self.train_scores_.items()
        }
        return self

    def score_samples(self, embeddings: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """(N,) anomaly scores, higher = more anomalous."""
        self._check_fitted()
        x = self._prepare(check_embeddings(embeddings, meta, "score"))
        if x.shape[1] != self.n_features_in_:
            raise AsdError(
                f"embeddings have {x.shape[1]} dimensions, the scorer was fitted on "
                f"{self.n_features_in_}"
            )
        scores = np.empty(len(x))
        for key, rows in group_rows(section_keys(meta, need_domain=False)).items():
            if key not in self.sections():
                raise AsdError(
                    f"machine {key[0]} section {key[1]:02d} was not seen when fitting "
                    f"(known: {known(self.sections())})"
                )
            scores[rows] = self._score_section(key, x[rows])
        return scores

    def predict(self, embeddings: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """0/1 decisions (N,), 1 = anomalous (DCASE's ``decision_result`` convention)."""
        return self.decide(self.score_samples(embeddings, meta), meta)

    def decide(self, scores: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """0/1 decisions (N,): 1 where the score exceeds its section's threshold."""
        self._check_fitted()
        scores = np.asarray(scores, dtype=float)
        if scores.shape != (len(meta),):
            raise AsdError(f"scores have shape {scores.shape}, meta has {len(meta)} rows")
        out = np.zeros(len(scores), dtype=int)
        for key, rows in group_rows(section_keys(meta, need_domain=False)).items():
            if key not in self.thresholds_:
                raise AsdError(
                    f"machine {key[0]} section {key[1]:02d} was not seen when fitting "
                    f"(known: {known(self.thresholds_)})"
                )
            out[rows] = (scores[rows] > self.thresholds_[key]).astype(int)
        return out

    # ----------------------------------------------------------- for subclasses
    def sections(self) -> list[Key]:
        """The fitted sections (a subclass returns the keys of its per-section models)."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Empty the per-section models before a fit."""
        raise NotImplementedError

    def _fit_section(self, x: np.ndarray, domains: np.ndarray, key: Key) -> str:
        """Fit one section on its (n, d) normal clips; a fallback reason, or ''."""
        raise NotImplementedError

    def _score_section(self, key: Key, x: np.ndarray) -> np.ndarray:
        """(n,) anomaly scores of one section's (n, d) rows."""
        raise NotImplementedError

    def _check_settings(self) -> None:
        """Reject impossible settings of the subclass (at fit time, the scikit-learn place)."""

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        """Rows as the models see them (kNN: unit length); identity by default."""
        return x

    # ------------------------------------------------------------------ helpers
    def _check_common(self) -> None:
        if not 0 < self.threshold_quantile < 1:
            raise AsdError(
                f"scoring.threshold_quantile must be in (0, 1), got {self.threshold_quantile}"
            )
        if self.threshold_folds < 0 or self.threshold_folds == 1:
            raise AsdError(
                f"scoring.threshold_folds must be 0 or at least 2, got {self.threshold_folds}"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise AsdError(
                f"{type(self).__name__} is not fitted: call fit(embeddings, meta) first"
            )


def domain_centres(
    x: np.ndarray, domains: np.ndarray, strategy: str, centre_of: Callable[..., np.ndarray]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(centres, domain-centred rows) of one section's (n, d) normal clips.

    ``strategy`` 'min': one centre per domain (``centre_of`` its rows, e.g. np.mean), each row
    minus its domain's centre; 'pooled': one zero centre, the rows as they are. Ten target clips
    are enough for a centre, not for a covariance or a mixture of their own.
    """
    if strategy not in DOMAIN_STRATEGIES:
        raise AsdError(
            f"scoring.domain_strategy must be one of {DOMAIN_STRATEGIES}, got {strategy!r}"
        )
    if strategy == "pooled":
        return {"pooled": np.zeros(x.shape[1])}, x
    centres = {dom: centre_of(x[domains == dom], axis=0) for dom in sorted(set(domains))}
    return centres, x - np.stack([centres[dom] for dom in domains])  # (n, d) domain-centred


def normal_train_rows(meta: pd.DataFrame) -> np.ndarray:
    """(N,) rows a scorer fits: label 'normal' and split 'train' where those columns exist."""
    use = np.ones(len(meta), dtype=bool)
    if "label" in meta.columns:
        use &= meta["label"].astype(str).to_numpy() == "normal"
    if "split" in meta.columns:
        use &= meta["split"].astype(str).to_numpy() == "train"
    return use


def check_embeddings(embeddings: np.ndarray, meta: pd.DataFrame, what: str) -> np.ndarray:
    """Embeddings as finite float64 (N, d) matching ``meta``; AsdError otherwise."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise AsdError(f"{what}: embeddings must be a non-empty (N, d) array, got {x.shape}")
    if len(meta) != x.shape[0]:
        raise AsdError(f"{what}: {x.shape[0]} embeddings but {len(meta)} meta rows")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise AsdError(f"{what}: {int(bad.sum())} embedding(s) contain NaN or inf")
    return x


def section_keys(meta: pd.DataFrame, need_domain: bool) -> list[Key]:
    """(machine, section) of every row of ``meta``."""
    needed = ["machine", "section"] + (["domain"] if need_domain else [])
    missing = [c for c in needed if c not in meta.columns]
    if missing:
        raise AsdError(f"meta lacks column(s) {', '.join(missing)}")
    return [(str(m), int(s)) for m, s in zip(meta["machine"], meta["section"], strict=True)]


def group_rows(keys: list[Key]) -> dict[Key, np.ndarray]:
    """Row positions of each key, in first-seen order."""
    groups: dict[Key, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return {k: np.asarray(v) for k, v in groups.items()}


def known(keys: Iterable[Key]) -> str:
    """'machine/section' list of fitted keys, for error messages."""
    return ", ".join(f"{m}/{s:02d}" for m, s in sorted(keys))
