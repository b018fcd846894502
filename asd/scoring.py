"""Anomaly scores: Mahalanobis distance of an embedding to the normal training clips.

One covariance model per (machine, section), fitted on the normal *train* embeddings of that
section, keeps the scikit-learn contract (``__init__`` stores settings, ``fit`` sets ``attr_``
and returns ``self``). The score is the Mahalanobis distance (the square root of scikit-learn's
squared ``mahalanobis``), higher = more anomalous.

DCASE 2023 gives 990 source and only 10 target clips per section, so a target covariance is not
estimable and a pooled Gaussian is dominated by the source domain. ``domain_strategy='min'``
handles this deliberately: one covariance shared by both domains, fitted on *domain-centred*
embeddings (each clip minus its domain's centre), and one centre per domain; a clip's score is
its distance to the nearer domain centre. Ten clips are enough for a mean, not a covariance.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.covariance import EmpiricalCovariance, LedoitWolf

from asd.config import DOMAIN_STRATEGIES, ESTIMATORS, ScoringConfig
from asd.errors import AsdError, warn_once
from asd.mcd import FastEllipticEnvelope

log = logging.getLogger(__name__)


_SINGULAR_RTOL = 1e-10
"""A covariance whose smallest eigenvalue is below this times its largest counts as singular."""

Key = tuple[str, int]


class MahalanobisScorer(BaseEstimator):
    """Per (machine, section) covariance of normal train embeddings -> Mahalanobis scores.

    Fitted attributes:

    - ``estimators_``: ``{(machine, section): fitted sklearn covariance estimator}``. With
      ``domain_strategy='min'`` it was fitted on domain-centred embeddings.
    - ``centres_``: ``{(machine, section): {domain: (d,) centre}}`` subtracted before the
      estimator's ``mahalanobis`` (``{'pooled': zeros}`` for the pooled strategy, whose
      location is the estimator's own ``location_``).
    - ``thresholds_``: ``{(machine, section): float}``, the ``threshold_quantile`` quantile of
      the normal train clips' scores.
    - ``fallbacks_``: ``{(machine, section): reason}`` for sections that used the Ledoit-Wolf
      shrinkage fallback (empty when none did).
    - ``n_features_in_``: embedding size.

    Fallback: when the (domain-centred) clips cannot give a full-rank covariance (rank bound
    ``n_clips - n_centres < d``, i.e. ``n <= d`` pooled), when MCD's support subset would have
    ``h <= d`` clips, when the fitted covariance is numerically singular (dead units, duplicate
    clips) or when EllipticEnvelope fails or warns that the data is not full rank, the section
    uses ``sklearn.covariance.LedoitWolf`` (shrinkage to a scaled identity, always invertible)
    and a warning is logged.
    """

    def __init__(
        self,
        estimator: str = "ml",
        domain_strategy: str = "min",
        threshold_quantile: float = 0.9,
        support_fraction: float = 0.0,
        random_state: int = 0,
    ) -> None:
        self.estimator = estimator
        self.domain_strategy = domain_strategy
        self.threshold_quantile = threshold_quantile
        self.support_fraction = support_fraction
        self.random_state = random_state

    @classmethod
    def from_config(cls, cfg: ScoringConfig, random_state: int = 0) -> MahalanobisScorer:
        """A scorer with the settings of ``cfg`` (the ``scoring`` section of a Config)."""
        return cls(
            estimator=cfg.estimator,
            domain_strategy=cfg.domain_strategy,
            threshold_quantile=cfg.threshold_quantile,
            support_fraction=cfg.support_fraction,
            random_state=random_state,
        )

    # ------------------------------------------------------------------ fit
    def fit(self, embeddings: np.ndarray, meta: pd.DataFrame) -> MahalanobisScorer:
        """Fit one model per (machine, section) on the normal train clips; returns ``self``.

        ``embeddings``: (N, d). ``meta``: N rows with ``machine, section, domain``; when it
        also has ``label`` / ``split`` columns only ``label == 'normal'`` / ``split == 'train'``
        rows are used, so a whole index can be passed.
        """
        self._check_settings()
        x = _check_embeddings(embeddings, meta, "fit")
        keys = _keys(meta, need_domain=True)
        use = np.ones(len(meta), dtype=bool)
        if "label" in meta.columns:
            use &= meta["label"].astype(str).to_numpy() == "normal"
        if "split" in meta.columns:
            use &= meta["split"].astype(str).to_numpy() == "train"
        domains = meta["domain"].astype(str).to_numpy()

        self.n_features_in_ = x.shape[1]
        self.estimators_: dict[Key, Any] = {}
        self.centres_: dict[Key, dict[str, np.ndarray]] = {}
        self.thresholds_: dict[Key, float] = {}
        self.fallbacks_: dict[Key, str] = {}
        for key, positions in sorted(_group_rows(keys).items()):
            rows = positions[use[positions]]
            n = len(rows)
            if n < 2:
                raise AsdError(
                    f"machine {key[0]} section {key[1]:02d}: {n} normal train clip(s), "
                    "need at least 2 to fit a covariance"
                )
            est, centres, reason = self._fit_section(x[rows], domains[rows], key)
            self.estimators_[key] = est
            self.centres_[key] = centres
            if reason:
                self.fallbacks_[key] = reason
            train_scores = _min_distance(est, centres, x[rows])
            self.thresholds_[key] = float(np.quantile(train_scores, self.threshold_quantile))
        return self

    def _check_settings(self) -> None:
        """Reject impossible settings at fit time (the scikit-learn place for it)."""
        if self.estimator not in ESTIMATORS:
            raise AsdError(f"scoring.estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.domain_strategy not in DOMAIN_STRATEGIES:
            raise AsdError(
                f"scoring.domain_strategy must be one of {DOMAIN_STRATEGIES}, "
                f"got {self.domain_strategy!r}"
            )
        if not 0 < self.threshold_quantile < 1:
            raise AsdError(
                f"scoring.threshold_quantile must be in (0, 1), got {self.threshold_quantile}"
            )
        if not 0 <= self.support_fraction <= 1:
            raise AsdError(
                f"scoring.support_fraction must be in [0, 1], got {self.support_fraction}"
            )

    def _fit_section(
        self, x: np.ndarray, domains: np.ndarray, key: Key
    ) -> tuple[Any, dict[str, np.ndarray], str]:
        """(estimator, centres, fallback reason or '') for one section's normal clips (n, d)."""
        n, d = x.shape
        if self.domain_strategy == "pooled":
            centres = {"pooled": np.zeros(d)}
            z = x
        else:
            # Elliptic centres on the coordinate-wise median: robust to a few odd clips and
            # defined for 10 target clips in 128-d, where a per-domain MCD location is not.
            centre_of = np.median if self.estimator == "elliptic" else np.mean
            centres = {dom: centre_of(x[domains == dom], axis=0) for dom in sorted(set(domains))}
            z = x - np.stack([centres[dom] for dom in domains])  # (n, d) domain-centred
        rank_bound = n - len(centres)  # centring each group removes one degree of freedom
        name = f"machine {key[0]} section {key[1]:02d}"

        reason = ""
        if rank_bound < d:
            reason = f"{n} clips in {len(centres)} group(s) give rank <= {rank_bound} < d={d}"
        elif self.estimator == "elliptic":
            sf = self.support_fraction or None
            h = math.ceil(sf * n) if sf else math.ceil(0.5 * (n + d + 1))
            if h <= d:
                reason = f"MCD support of {h} clips <= d={d}"
            else:
                est, reason = _fit_elliptic(z, sf, self.random_state)
        else:
            est = EmpiricalCovariance().fit(z)
        if not reason:
            reason = _singular(est.covariance_)
        if reason:
            warn_once(log, f"{name}: {reason}; using LedoitWolf shrinkage")
            est = LedoitWolf().fit(z)
            if not np.trace(est.covariance_) > 0:
                raise AsdError(f"{name}: all {n} normal train embeddings are identical")
        return est, centres, reason

    # ---------------------------------------------------------------- score
    def score_samples(self, embeddings: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        """Anomaly scores (N,): Mahalanobis distance, nearest domain centre for 'min'.

        DCASE's sign, not scikit-learn's outlier detectors': higher means more anomalous.
        """
        self._check_fitted()
        x = _check_embeddings(embeddings, meta, "score")
        if x.shape[1] != self.n_features_in_:
            raise AsdError(
                f"embeddings have {x.shape[1]} dimensions, the scorer was fitted on "
                f"{self.n_features_in_}"
            )
        keys = _keys(meta, need_domain=False)
        scores = np.empty(len(x))
        for key, rows in _group_rows(keys).items():
            if key not in self.estimators_:
                raise AsdError(
                    f"machine {key[0]} section {key[1]:02d} was not seen when fitting "
                    f"(known: {_known(self.estimators_)})"
                )
            scores[rows] = _min_distance(self.estimators_[key], self.centres_[key], x[rows])
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
        keys = _keys(meta, need_domain=False)
        out = np.zeros(len(scores), dtype=int)
        for key, rows in _group_rows(keys).items():
            if key not in self.thresholds_:
                raise AsdError(
                    f"machine {key[0]} section {key[1]:02d} was not seen when fitting "
                    f"(known: {_known(self.thresholds_)})"
                )
            out[rows] = (scores[rows] > self.thresholds_[key]).astype(int)
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "estimators_"):
            raise AsdError("MahalanobisScorer is not fitted: call fit(embeddings, meta) first")


# ---------------------------------------------------------------------- helpers
def _fit_elliptic(z: np.ndarray, support_fraction: float | None, seed: int) -> tuple[Any, str]:
    """EllipticEnvelope on (n, d); a fallback reason instead of a deep scikit-learn failure.

    The MCD search is :mod:`asd.mcd`'s (seconds, not minutes, at 1,000 clips x 512 dims).
    """
    est = FastEllipticEnvelope(support_fraction=support_fraction, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est.fit(z)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
            return est, f"EllipticEnvelope failed ({exc})"
    for w in caught:
        message = str(w.message)
        numeric = issubclass(w.category, RuntimeWarning) and (
            "invalid value" in message or "divide" in message
        )
        if "full rank" in message or numeric:
            return est, f"EllipticEnvelope: {message.splitlines()[0]}"
        log.warning("EllipticEnvelope: %s", message.splitlines()[0])
    if not (np.isfinite(est.location_).all() and np.isfinite(est.covariance_).all()):
        return est, "EllipticEnvelope gave a non-finite estimate"
    return est, ""


def _singular(cov: np.ndarray) -> str:
    """A reason when ``cov`` (d, d) is numerically singular, else ''."""
    eig = np.linalg.eigvalsh(cov)
    if not np.isfinite(eig).all() or eig[0] <= _SINGULAR_RTOL * max(eig[-1], 0.0):
        return f"covariance is singular (eigenvalues {eig[0]:.3g} .. {eig[-1]:.3g})"
    return ""


def _min_distance(est: Any, centres: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """(n,) distance to the nearest centre: sqrt of sklearn's squared ``mahalanobis``."""
    sq = np.stack([est.mahalanobis(x - c) for c in centres.values()])  # (n_centres, n)
    return np.sqrt(np.maximum(sq.min(axis=0), 0.0))


def _check_embeddings(embeddings: np.ndarray, meta: pd.DataFrame, what: str) -> np.ndarray:
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


def _keys(meta: pd.DataFrame, need_domain: bool) -> list[Key]:
    """(machine, section) of every row of ``meta``."""
    needed = ["machine", "section"] + (["domain"] if need_domain else [])
    missing = [c for c in needed if c not in meta.columns]
    if missing:
        raise AsdError(f"meta lacks column(s) {', '.join(missing)}")
    return [(str(m), int(s)) for m, s in zip(meta["machine"], meta["section"], strict=True)]


def _group_rows(keys: list[Key]) -> dict[Key, np.ndarray]:
    """Row positions of each key, in first-seen order."""
    groups: dict[Key, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return {k: np.asarray(v) for k, v in groups.items()}


def _known(d: dict[Key, Any]) -> str:
    return ", ".join(f"{m}/{s:02d}" for m, s in sorted(d))


# ------------------------------------------------------------------ submission
def write_submission(
    out_dir: str | Path, meta: pd.DataFrame, scores: np.ndarray, decisions: np.ndarray
) -> list[Path]:
    """DCASE submission CSVs (headerless, two columns) per machine and section.

    Writes ``anomaly_score_<machine>_section_<nn>_test.csv`` (clip, score) and
    ``decision_result_<machine>_section_<nn>_test.csv`` (clip, 0/1); rows keep ``meta``'s
    order. Returns the paths written.
    """
    missing = [c for c in ("clip", "machine", "section") if c not in meta.columns]
    if missing:
        raise AsdError(f"write_submission: meta lacks column(s) {', '.join(missing)}")
    scores = np.asarray(scores, dtype=float)
    decisions = np.asarray(decisions)
    if scores.shape != (len(meta),) or decisions.shape != (len(meta),):
        raise AsdError(
            f"write_submission: {len(meta)} meta rows but scores {scores.shape} and "
            f"decisions {decisions.shape}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clips = meta["clip"].astype(str).to_numpy()
    paths: list[Path] = []
    for (machine, section), rows in sorted(_group_rows(_keys(meta, need_domain=False)).items()):
        stem = f"{machine}_section_{section:02d}_test.csv"
        for prefix, values in (
            ("anomaly_score", scores[rows]),
            ("decision_result", decisions[rows].astype(int)),
        ):
            path = out / f"{prefix}_{stem}"
            pd.DataFrame({"clip": clips[rows], "value": values}).to_csv(
                path, header=False, index=False
            )
            paths.append(path)
    return paths
