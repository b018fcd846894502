"""The GMM scorer: a known density, the nearer-domain handling, small sections."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from asd.detect.gmm import GmmScorer
from asd.errors import AsdError


def _meta(domains, machine="fan"):
    return pd.DataFrame({"machine": machine, "section": 0, "domain": domains})


def test_one_component_scores_the_gaussian_negative_log_density():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]])
    x = rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=4000)
    scorer = GmmScorer(n_components=1, domain_strategy="pooled", reg=1e-9).fit(
        x, _meta(["source"] * len(x))
    )
    queries = rng.normal(size=(20, 3)) * 2
    mine = scorer.score_samples(queries, _meta(["source"] * 20))
    fitted = scorer.mixtures_[("fan", 0)]
    expected = -multivariate_normal(fitted.means_[0], fitted.covariances_[0]).logpdf(queries)
    np.testing.assert_allclose(mine, expected, rtol=1e-8)
    # and the fit found the true density (4000 samples: close, not equal)
    true = -multivariate_normal([1.0, -2.0, 0.5], cov).logpdf(queries)
    np.testing.assert_allclose(mine, true, rtol=0.05)


def test_two_modes_are_normal_and_the_gap_between_them_is_not():
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(-5, 1, size=(200, 2)), rng.normal(5, 1, size=(200, 2))]
    meta = _meta(["source"] * 400)
    scorer = GmmScorer(n_components=2, domain_strategy="pooled").fit(x, meta)
    s = scorer.score_samples(np.array([[-5.0, -5.0], [5.0, 5.0], [0.0, 0.0]]), _meta(["x"] * 3))
    assert s[2] > s[0] + 5 and s[2] > s[1] + 5


def test_min_strategy_centres_each_domain():
    rng = np.random.default_rng(2)
    src = rng.normal(0, 1, size=(60, 3))
    tgt = rng.normal(8, 1, size=(6, 3))
    x = np.r_[src, tgt]
    meta = _meta(["source"] * 60 + ["target"] * 6)
    scorer = GmmScorer(n_components=1, threshold_folds=3).fit(x, meta)
    s = scorer.score_samples(np.array([[0, 0, 0], [8, 8, 8], [4, 4, 4.0]]), _meta(["?"] * 3))
    assert abs(s[0] - s[1]) < 1.0 and s[2] > s[0] + 5
    assert len(scorer.train_scores_[("fan", 0)]) == 66
    assert set(scorer.centres_[("fan", 0)]) == {"source", "target"}


def test_few_clips_cap_the_components_and_bad_settings_are_named():
    x = np.random.default_rng(3).normal(size=(3, 2))
    scorer = GmmScorer(n_components=8).fit(x, _meta(["source"] * 3))
    assert scorer.mixtures_[("fan", 0)].n_components == 3
    assert "mixture components" in scorer.fallbacks_[("fan", 0)]
    with pytest.raises(AsdError, match="gmm_covariance"):
        GmmScorer(covariance_type="banana").fit(x, _meta(["source"] * 3))
    with pytest.raises(AsdError, match="not seen"):
        scorer.score_samples(x, _meta(["source"] * 3, machine="valve"))
