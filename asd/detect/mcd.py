"""Minimum covariance determinant at embedding size: FastMCD with batched C-steps in torch.

scikit-learn's ``EllipticEnvelope`` (FastMCD) takes minutes per DCASE section of ~1,000 clips
x 512 dimensions: above 500 clips it splits the data into subsets of ~300, each smaller than
the dimension, so every candidate covariance is singular and costs a pseudo-inverse. This
module keeps the estimator (Rousseeuw & Van Driessen's FastMCD: the ``h`` clips whose
covariance has the smallest determinant, then scikit-learn's consistency correction and
reweighting, then ``contamination`` for the offset) and makes it fast:

- **Whitened span.** The C-steps run on the clips whitened by their own PCA and reduced to the
  span the clips occupy. MCD is affine equivariant, so the chosen ``h``-subset is the same as
  in the original coordinates (exact when the clips have full rank, i.e. ``n > d`` in
  general position); whitening only makes every candidate covariance well conditioned.
- **Batched candidates.** Several starts (random ``h``-subsets plus the ``h`` clips nearest
  the coordinate-wise median) take their C-steps together as batched Cholesky solves.
- **Same output.** The final support is mapped back and location, covariance, correction,
  reweighting and ``offset_`` are computed exactly as scikit-learn's ``MinCovDet`` and
  ``EllipticEnvelope`` compute them, on a subclass of ``EllipticEnvelope``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import EllipticEnvelope

_RANK_RTOL = 1e-12
"""Variances below this times the largest count as zero (outside the clips' span)."""


@dataclass(frozen=True)
class McdSearch:
    """How hard FastMCD searches for the smallest-determinant subset."""

    n_starts: int = 10
    """Random h-subsets that start C-steps (the median start is added to these)."""
    n_best: int = 3
    """Starts kept after two C-steps and iterated to convergence."""
    max_steps: int = 30
    """C-steps at most per kept start (each step never raises the determinant)."""
    tol: float = 1e-3
    """Stop when no kept start's log-determinant fell by more than this (nats) in a step."""


def support_size(n: int, d: int, support_fraction: float | None) -> int:
    """``h``: clips in the MCD subset, as scikit-learn sets it."""
    if support_fraction is None:
        return min(n, math.ceil(0.5 * (n + d + 1)))
    return min(n, int(support_fraction * n))


def whitened_span(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """(n, d) -> ((n, r) clips whitened in the span they occupy, whether r = d).

    Full rank: ``L^-1 (x - mean)`` with ``L L^T`` the clips' covariance (one Cholesky, far
    cheaper than an SVD at 1,000 x 512). Otherwise the clips are rotated onto the ``r``
    principal axes they occupy and scaled to unit variance. Either way the covariance of
    the result is the identity; the estimates themselves come from the original clips.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    centred = xt - xt.mean(dim=0)  # (n, d)
    cov = centred.T @ centred / max(len(x) - 1, 1)  # (d, d)
    chol, info = torch.linalg.cholesky_ex(cov)
    diag = torch.diagonal(chol).square()
    if int(info) == 0 and float(diag.min()) > _RANK_RTOL * float(torch.diagonal(cov).max()):
        return torch.linalg.solve_triangular(chol, centred.T, upper=False).T.numpy(), True
    eigval, eigvec = torch.linalg.eigh(cov)  # ascending (d,), (d, d)
    keep = eigval > _RANK_RTOL * max(float(eigval[-1]), 0.0)
    if not bool(keep.any()):
        return np.zeros((len(x), 0)), False
    return (centred @ eigvec[:, keep] / eigval[keep].sqrt()).numpy(), False


def c_steps(
    y: torch.Tensor, support: torch.Tensor, h: int, steps: int, tol: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concentration steps on a batch of candidate supports.

    y (n, r) clips; support (k, h) clip positions of k candidates. Each step fits the mean
    and covariance of a candidate's ``h`` clips and keeps the ``h`` clips nearest to it in
    Mahalanobis distance, which never increases the covariance's determinant. Returns the
    supports after ``steps`` steps (or once no log-determinant falls by more than ``tol``)
    and the log-determinants (k,) of the supports' covariances.
    """
    logdet = torch.full((support.shape[0],), math.inf, dtype=y.dtype, device=y.device)
    for _ in range(steps):
        previous = logdet
        chosen = y[support]  # (k, h, r)
        mean = chosen.mean(dim=1, keepdim=True)  # (k, 1, r)
        centred = chosen - mean  # (k, h, r)
        cov = centred.transpose(1, 2) @ centred / h  # (k, r, r)
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info > 0).any()):
            raise np.linalg.LinAlgError("an MCD candidate covariance is singular")
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(dim=1)  # (k,)
        if bool((previous - logdet <= tol).all()):
            break  # converged: the supports fitted in this step are the previous step's result
        diff = (y[None] - mean).transpose(1, 2)  # (k, r, n)
        z = torch.linalg.solve_triangular(chol, diff, upper=False)  # (k, r, n) = L^-1 (y - mu)
        dist = z.square().sum(dim=1)  # (k, n) squared Mahalanobis distances
        new = torch.topk(dist, h, dim=1, largest=False).indices.sort(dim=1).values  # (k, h)
        if torch.equal(new, support):
            break
        support = new
    return support, logdet


def fast_mcd(
    x: np.ndarray,
    support_fraction: float | None = None,
    random_state: int | None = None,
    search: McdSearch | None = None,
    whitened: np.ndarray | None = None,
) -> np.ndarray:
    """The boolean support (n,) of the MCD subset of ``x`` (n, d), found by FastMCD.

    ``whitened``: :func:`whitened_span` of ``x`` when the caller has it already. Raises
    ``ValueError`` when the subset would hold no more clips than the span has dimensions
    (its covariance would be singular).
    """
    search = search or McdSearch()
    n, d = x.shape
    y_np = whitened_span(x)[0] if whitened is None else whitened
    r = y_np.shape[1]
    h = support_size(n, d, support_fraction)
    if h <= r:
        raise ValueError(f"MCD support of {h} clips cannot fit {r} dimensions")
    # float32 search on whitened clips (well conditioned); the chosen support's estimates
    # are then computed in float64 by the caller, as scikit-learn does
    y = torch.from_numpy(y_np).float()
    rng = np.random.default_rng(random_state)
    starts = [np.sort(rng.permutation(n)[:h]) for _ in range(search.n_starts)]
    median_dist = np.abs(y_np - np.median(y_np, axis=0)).sum(axis=1)  # robust start
    starts.append(np.sort(np.argsort(median_dist, kind="stable")[:h]))
    support = torch.from_numpy(np.stack(starts))  # (k, h)
    support, logdet = c_steps(y, support, h, steps=2)
    keep = torch.argsort(logdet)[: search.n_best]
    support, logdet = c_steps(y, support[keep], h, search.max_steps, search.tol)
    best = support[int(torch.argmin(logdet))].numpy()
    mask = np.zeros(n, dtype=bool)
    mask[best] = True
    return mask


class FastEllipticEnvelope(EllipticEnvelope):
    """``EllipticEnvelope`` whose MCD search is :func:`fast_mcd`.

    Every attribute and method (``location_``, ``covariance_``, ``support_``, ``dist_``,
    ``offset_``, ``mahalanobis``, ``score_samples``, ``predict``) means what it means in
    scikit-learn; ``assume_centered`` is not supported (the scorer centres per domain).
    """

    def __init__(
        self,
        *,
        store_precision: bool = True,
        assume_centered: bool = False,
        support_fraction: float | None = None,
        contamination: float = 0.1,
        random_state: int | None = None,
        n_starts: int = 10,
        n_best: int = 3,
        max_steps: int = 30,
    ) -> None:
        super().__init__(
            store_precision=store_precision,
            assume_centered=assume_centered,
            support_fraction=support_fraction,
            contamination=contamination,
            random_state=random_state,
        )
        self.n_starts = n_starts
        self.n_best = n_best
        self.max_steps = max_steps

    def fit(self, X: np.ndarray, y: object = None) -> FastEllipticEnvelope:  # noqa: N803
        """Fit the robust location and covariance of ``X`` (n, d); returns ``self``."""
        if not 0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {self.contamination}")
        if self.assume_centered:
            raise ValueError("FastEllipticEnvelope does not support assume_centered=True")
        x = np.asarray(X, dtype=np.float64)
        whitened, full_rank = whitened_span(x)
        if not full_rank:
            warnings.warn(
                "The covariance matrix associated to your dataset is not full rank",
                RuntimeWarning,
                stacklevel=2,
            )
        search = McdSearch(self.n_starts, self.n_best, self.max_steps)
        support = fast_mcd(x, self.support_fraction, self.random_state, search, whitened)
        # from here on: scikit-learn's MinCovDet.fit, correct_covariance, reweight_covariance
        self.raw_location_ = x[support].mean(axis=0)
        self.raw_covariance_ = self._nonrobust_covariance(x[support], assume_centered=False)
        self.raw_support_ = support
        self.location_ = self.raw_location_
        self.support_ = support
        self.dist_ = _squared_distances(x - self.raw_location_, self.raw_covariance_)
        self.correct_covariance(x)
        self.reweight_covariance(x)
        self.offset_ = np.percentile(-self.dist_, 100.0 * self.contamination)
        return self

    def _set_covariance(self, covariance: np.ndarray) -> None:
        """Set ``covariance_`` and its inverse ``precision_`` from a Cholesky factor.

        scikit-learn uses ``pinvh``: the same matrix for a positive definite covariance,
        several times slower.
        """
        self.covariance_ = covariance
        try:
            chol = np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError:
            super()._set_covariance(covariance)
            return
        inv_chol = np.linalg.solve(chol, np.eye(len(covariance)))  # L^-1
        self.precision_ = inv_chol.T @ inv_chol


def _squared_distances(centred: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """(n,) squared Mahalanobis distances of centred clips (n, d) under ``cov`` (d, d)."""
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:  # singular: scikit-learn's pseudo-inverse
        return np.sum(centred @ np.linalg.pinv(cov, hermitian=True) * centred, axis=1)
    z = np.linalg.solve(chol, centred.T)  # (d, n) = L^-1 x
    return np.sum(z * z, axis=0)
