"""FastMCD and FastEllipticEnvelope against scikit-learn's EllipticEnvelope and MCD's invariants."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.covariance import EllipticEnvelope

from asd.detect.mcd import FastEllipticEnvelope, McdSearch, fast_mcd, support_size, whitened_span


def contaminated(rng, n, d, outliers=0.1, shift=6.0):
    """Correlated Gaussian clips (n, d) whose first ``outliers`` share sit ``shift`` away."""
    mixing = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    x = rng.standard_normal((n, d)) @ mixing
    k = int(outliers * n)
    x[:k] += shift * rng.standard_normal(d) / np.linalg.norm(rng.standard_normal(d)) * np.sqrt(d)
    return x


def log_det(cov):
    return np.linalg.slogdet(cov)[1]


@pytest.mark.parametrize(("n", "d", "fraction"), [(300, 6, None), (400, 12, 0.75)])
def test_scores_rank_like_sklearn(n, d, fraction):
    rng = np.random.default_rng(n + d)
    x = contaminated(rng, n, d)
    test = np.concatenate([x, contaminated(rng, 200, d, outliers=0.5)])
    fast = FastEllipticEnvelope(support_fraction=fraction, random_state=0).fit(x)
    ref = EllipticEnvelope(support_fraction=fraction, random_state=0).fit(x)
    rho = spearmanr(fast.score_samples(test), ref.score_samples(test)).statistic
    assert rho >= 0.99
    # the search is about as good as scikit-learn's: its raw MCD determinant is no larger,
    # to 0.01 nats per dimension (both are local searches)
    assert log_det(fast.raw_covariance_) <= log_det(ref.raw_covariance_) + 0.01 * d
    assert fast.raw_support_.sum() == ref.raw_support_.sum() == support_size(n, d, fraction)


def test_outliers_leave_the_support_and_get_flagged():
    rng = np.random.default_rng(1)
    x = contaminated(rng, 500, 20, outliers=0.2)
    est = FastEllipticEnvelope(contamination=0.2, random_state=0).fit(x)
    assert not est.raw_support_[:100].any()  # all 100 shifted clips left out
    assert not est.support_[:100].any()  # and stay out after reweighting
    assert (est.predict(x[:100]) == -1).all()
    # contamination sets the offset: that share of the training clips falls outside
    assert np.mean(est.predict(x) == -1) == pytest.approx(0.2, abs=0.01)


def test_affine_equivariance():
    """MCD of A x + b is A (MCD of x) + b: the same clips, the same distances."""
    rng = np.random.default_rng(2)
    x = contaminated(rng, 300, 5)
    a, b = rng.standard_normal((5, 5)) + 3 * np.eye(5), rng.standard_normal(5)
    est = FastEllipticEnvelope(random_state=0).fit(x)
    moved = FastEllipticEnvelope(random_state=0).fit(x @ a.T + b)
    np.testing.assert_array_equal(est.support_, moved.support_)
    np.testing.assert_allclose(moved.location_, a @ est.location_ + b, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(moved.dist_, est.dist_, rtol=1e-6)


def test_more_starts_never_worsen_the_determinant_and_seed_is_reproducible():
    rng = np.random.default_rng(3)
    x = contaminated(rng, 400, 30)
    few = fast_mcd(x, random_state=0, search=McdSearch(n_starts=1, n_best=1))
    many = fast_mcd(x, random_state=0, search=McdSearch(n_starts=20, n_best=5))
    assert log_det(np.cov(x[many], rowvar=False)) <= log_det(np.cov(x[few], rowvar=False)) + 1e-9
    np.testing.assert_array_equal(fast_mcd(x, random_state=7), fast_mcd(x, random_state=7))


def test_whitened_span_drops_dimensions_the_clips_do_not_occupy():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 8))  # rank 3 in 8 dims
    y, full_rank = whitened_span(x)
    assert y.shape == (50, 3) and not full_rank
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(3), atol=1e-8)
    y, full_rank = whitened_span(x[:, :3])
    assert full_rank
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(3), atol=1e-8)


def test_rank_deficient_data_warns_like_sklearn_and_small_support_raises():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((100, 2)) @ rng.standard_normal((2, 4))
    with pytest.warns(RuntimeWarning, match="full rank"):
        FastEllipticEnvelope(random_state=0).fit(x)
    with pytest.raises(ValueError, match="MCD support"):
        fast_mcd(rng.standard_normal((30, 10)), support_fraction=0.3)
