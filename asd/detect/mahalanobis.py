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
from scipy.linalg import pinvh
from sklearn.covariance import EmpiricalCovariance, LedoitWolf
from sklearn.covariance import ledoit_wolf as shrunk_covariance

from asd.config import DOMAIN_STRATEGIES, ESTIMATORS, ScoringConfig
from asd.detect.mcd import FastEllipticEnvelope
from asd.detect.scorer import SectionScorer, domain_centres, group_rows, section_keys
from asd.errors import AsdError, warn_once

log = logging.getLogger(__name__)


_SINGULAR_RTOL = 1e-10
"""A covariance whose smallest eigenvalue is below this times its largest counts as singular."""

Key = tuple[str, int]


class MahalanobisScorer(SectionScorer):
    """Per (machine, section) covariance of normal train embeddings -> Mahalanobis scores.

    Fitted attributes:

    - ``estimators_``: ``{(machine, section): fitted sklearn covariance estimator}``. With
      ``domain_strategy='min'`` it was fitted on domain-centred embeddings.
    - ``centres_``: ``{(machine, section): {domain: (d,) centre}}`` subtracted before the
      estimator's ``mahalanobis`` (``{'pooled': zeros}`` for the pooled strategy, whose
      location is the estimator's own ``location_``).
    - ``thresholds_``: ``{(machine, section): float}``, the ``threshold_quantile`` quantile of
      the normal train clips' scores (out-of-fold ones when ``threshold_folds`` >= 2).
    - ``train_scores_``: ``{(machine, section): (n,) scores}`` of those clips, in fit order.
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
        threshold_folds: int = 0,
    ) -> None:
        self.estimator = estimator
        self.domain_strategy = domain_strategy
        self.threshold_quantile = threshold_quantile
        self.support_fraction = support_fraction
        self.random_state = random_state
        self.threshold_folds = threshold_folds

    @classmethod
    def from_config(cls, cfg: ScoringConfig, random_state: int = 0) -> MahalanobisScorer:
        """A scorer with the settings of ``cfg`` (the ``scoring`` section of a Config)."""
        return cls(
            estimator=cfg.estimator,
            domain_strategy=cfg.domain_strategy,
            threshold_quantile=cfg.threshold_quantile,
            support_fraction=cfg.support_fraction,
            random_state=random_state,
            threshold_folds=cfg.threshold_folds,
        )

    min_clips = 2

    def sections(self) -> list[Key]:
        """The fitted sections."""
        return list(getattr(self, "estimators_", {}))

    def _reset(self) -> None:
        self.estimators_: dict[Key, Any] = {}
        self.centres_: dict[Key, dict[str, np.ndarray]] = {}

    def _check_settings(self) -> None:
        """Reject impossible settings at fit time (the scikit-learn place for it)."""
        if self.estimator not in ESTIMATORS:
            raise AsdError(f"scoring.estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.domain_strategy not in DOMAIN_STRATEGIES:
            raise AsdError(
                f"scoring.domain_strategy must be one of {DOMAIN_STRATEGIES}, "
                f"got {self.domain_strategy!r}"
            )
        if not 0 <= self.support_fraction <= 1:
            raise AsdError(
                f"scoring.support_fraction must be in [0, 1], got {self.support_fraction}"
            )

    def _fit_section(self, x: np.ndarray, domains: np.ndarray, key: Key) -> str:
        """Fit one section's covariance and domain centres; the fallback reason or ''."""
        n, d = x.shape
        # Elliptic centres on the coordinate-wise median: robust to a few odd clips and
        # defined for 10 target clips in 128-d, where a per-domain MCD location is not.
        centre_of = np.median if self.estimator == "elliptic" else np.mean
        centres, z = domain_centres(x, domains, self.domain_strategy, centre_of)
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
            est = ledoit_wolf(z)
            if not np.trace(est.covariance_) > 0:
                raise AsdError(f"{name}: all {n} normal train embeddings are identical")
        self.estimators_[key] = est
        self.centres_[key] = centres
        return reason

    def _score_section(self, key: Key, x: np.ndarray) -> np.ndarray:
        """Mahalanobis distance to the nearest domain centre ('min') or the pooled location."""
        return _min_distance(self.estimators_[key], self.centres_[key], x)


# ---------------------------------------------------------------------- helpers
def _fit_elliptic(z: np.ndarray, support_fraction: float | None, seed: int) -> tuple[Any, str]:
    """EllipticEnvelope on (n, d); a fallback reason instead of a deep scikit-learn failure.

    The MCD search is :mod:`asd.detect.mcd`'s (seconds, not minutes, at 1,000 clips x 512 dims).
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


def ledoit_wolf(z: np.ndarray) -> LedoitWolf:
    """``LedoitWolf().fit(z)``, its precision by the Woodbury identity when clips < dims.

    The fallback runs where a section has fewer clips than dimensions (an encoder's 1,024-d
    vectors over 50 clips), every epoch of a sweep's validation; scikit-learn inverts the
    d x d covariance by an eigendecomposition (0.6 s at d = 1,024 on 2 cores). The shrunk
    covariance is ``a I + b Xc' Xc``, so its inverse is ``(I - Xc' (a/b I_n + Xc Xc')^-1 Xc) / a``:
    an n x n solve, the same matrix to rounding.
    """
    n, d = z.shape
    location = z.mean(axis=0)
    xc = z - location
    covariance, shrinkage = shrunk_covariance(xc, assume_centered=True)  # scikit-learn's fit
    mu = float(np.trace(covariance)) / d  # shrinking keeps the trace of the empirical one
    a, b = shrinkage * mu, (1.0 - shrinkage) / n
    if n < d and a > 0 and b > 0:
        inner = np.linalg.solve(a / b * np.eye(n) + xc @ xc.T, xc)  # (n, d)
        precision = (np.eye(d) - xc.T @ inner) / a
    else:
        precision = pinvh(covariance, check_finite=False)
    est = LedoitWolf()
    est.location_, est.covariance_, est.precision_ = location, covariance, precision
    est.shrinkage_, est.n_features_in_ = float(shrinkage), d
    return est


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
    groups = group_rows(section_keys(meta, need_domain=False))
    for (machine, section), rows in sorted(groups.items()):
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
