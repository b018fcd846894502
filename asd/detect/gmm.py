"""Gaussian-mixture anomaly scores: negative log-likelihood under a mixture of normal clips.

TWFR-GMM (Guan et al., ICASSP 2023) showed a GMM on well-pooled log-mels is one of the
strongest simple detectors: a mixture covers several operating conditions where one
covariance cannot. The nearer-domain handling is the Mahalanobis scorer's: with
``domain_strategy='min'`` the mixture is fitted on domain-centred clips (each minus its
domain's mean: ten target clips give a mean, not a mixture) and a clip scores its smaller
negative log-likelihood over the domain centres; ``'pooled'`` fits the clips as they are.
``reg_covar`` is relative: ``gmm_reg`` times the mean per-dimension variance, so the same
setting suits dB log-mels and unit-scale embeddings.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from asd.config import GMM_COVARIANCES, ScoringConfig
from asd.detect.scorer import Key, SectionScorer, domain_centres
from asd.errors import AsdError, warn_once

log = logging.getLogger(__name__)


class GmmScorer(SectionScorer):
    """Per (machine, section) GaussianMixture of normal train embeddings -> -log p(x).

    Fitted attributes: ``mixtures_`` (``{key: fitted GaussianMixture}``), ``centres_``
    (``{key: {domain: (d,) centre}}``, ``{'pooled': zeros}`` when pooled), and the base's
    ``thresholds_``, ``train_scores_``, ``fallbacks_``, ``n_features_in_``. A section with
    fewer clips than components uses as many components as it has clips (with a note).
    """

    def __init__(
        self,
        n_components: int = 2,
        covariance_type: str = "full",
        reg: float = 1e-3,
        domain_strategy: str = "min",
        threshold_quantile: float = 0.9,
        threshold_folds: int = 0,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg = reg
        self.domain_strategy = domain_strategy
        self.threshold_quantile = threshold_quantile
        self.threshold_folds = threshold_folds
        self.random_state = random_state

    @classmethod
    def from_config(cls, cfg: ScoringConfig, random_state: int = 0) -> GmmScorer:
        """A scorer with the settings of ``cfg`` (the ``scoring`` section of a Config)."""
        return cls(
            n_components=cfg.gmm_components,
            covariance_type=cfg.gmm_covariance,
            reg=cfg.gmm_reg,
            domain_strategy=cfg.domain_strategy,
            threshold_quantile=cfg.threshold_quantile,
            threshold_folds=cfg.threshold_folds,
            random_state=random_state,
        )

    min_clips = 2

    def sections(self) -> list[Key]:
        """The fitted sections."""
        return list(getattr(self, "mixtures_", {}))

    def _reset(self) -> None:
        self.mixtures_: dict[Key, GaussianMixture] = {}
        self.centres_: dict[Key, dict[str, np.ndarray]] = {}

    def _check_settings(self) -> None:
        if self.n_components < 1:
            raise AsdError(f"scoring.gmm_components must be at least 1, got {self.n_components}")
        if self.covariance_type not in GMM_COVARIANCES:
            raise AsdError(
                f"scoring.gmm_covariance must be one of {GMM_COVARIANCES}, "
                f"got {self.covariance_type!r}"
            )
        if not self.reg > 0:
            raise AsdError(f"scoring.gmm_reg must be positive, got {self.reg}")

    def _fit_section(self, x: np.ndarray, domains: np.ndarray, key: Key) -> str:
        """Fit the section's mixture on its (domain-centred) normal clips (n, d)."""
        n, d = x.shape
        centres, z = domain_centres(x, domains, self.domain_strategy, np.mean)
        spread = float(z.var(axis=0).mean())
        if not spread > 0:
            raise AsdError(
                f"machine {key[0]} section {key[1]:02d}: all {n} normal train embeddings "
                "are identical"
            )
        components = min(self.n_components, n)
        reason = ""
        if components < self.n_components:
            reason = f"{n} clips: {components} of {self.n_components} mixture components"
            warn_once(log, f"machine {key[0]} section {key[1]:02d}: {reason}")
        mixture = GaussianMixture(
            n_components=components,
            covariance_type=self.covariance_type,
            reg_covar=self.reg * spread,
            random_state=self.random_state,
            max_iter=200,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a few clips: EM stops early
            mixture.fit(z)
        self.mixtures_[key] = mixture
        self.centres_[key] = centres
        return reason

    def _score_section(self, key: Key, x: np.ndarray) -> np.ndarray:
        """(n,) negative log-likelihood, the smaller over the domain centres."""
        mixture = self.mixtures_[key]
        nll = [-mixture.score_samples(x - c) for c in self.centres_[key].values()]
        return np.min(np.stack(nll), axis=0)
