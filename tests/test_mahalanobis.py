import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.covariance import EllipticEnvelope, EmpiricalCovariance, LedoitWolf

from asd.config import ScoringConfig
from asd.detect.mahalanobis import MahalanobisScorer, ledoit_wolf, write_submission
from asd.detect.metrics import section_scores
from asd.errors import AsdError


def gaussian(rng, n, d, mean=0.0, scale=None):
    """(n, d) correlated Gaussian clips around ``mean``."""
    scale = np.eye(d) + 0.3 * np.tri(d, k=-1) if scale is None else scale
    return rng.normal(size=(n, d)) @ scale.T + mean


def meta_for(n, machine="fan", section=0, domain="source", **extra):
    return pd.DataFrame(
        {"machine": machine, "section": section, "domain": domain, **extra}, index=range(n)
    )


@pytest.fixture
def train():
    """300 source clips in 4-d for two machines."""
    rng = np.random.default_rng(0)
    x = np.concatenate([gaussian(rng, 300, 4), gaussian(rng, 300, 4, mean=5.0)])
    meta = pd.concat([meta_for(300, "fan"), meta_for(300, "valve")], ignore_index=True)
    return x, meta


def numpy_mahalanobis(x, mean, cov):
    diff = x - mean
    return np.sqrt(np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff))


# ------------------------------------------------------------------ the math
def test_pooled_ml_equals_numpy_formula(train):
    x, meta = train
    scorer = MahalanobisScorer("ml", "pooled").fit(x, meta)
    assert isinstance(scorer.estimators_[("fan", 0)], EmpiricalCovariance)
    rng = np.random.default_rng(1)
    test = gaussian(rng, 50, 4, mean=1.0)
    fan = x[:300]
    expected = numpy_mahalanobis(test, fan.mean(0), np.cov(fan, rowvar=False, bias=True))
    np.testing.assert_allclose(scorer.score_samples(test, meta_for(50)), expected, rtol=1e-8)


def test_min_ml_equals_shared_covariance_nearest_domain_mean():
    rng = np.random.default_rng(2)
    src, tgt = gaussian(rng, 200, 3), gaussian(rng, 10, 3, mean=4.0)
    x = np.concatenate([src, tgt])
    meta = meta_for(210, domain=["source"] * 200 + ["target"] * 10)
    scorer = MahalanobisScorer("ml", "min").fit(x, meta)
    centred = np.concatenate([src - src.mean(0), tgt - tgt.mean(0)])
    cov = np.cov(centred, rowvar=False, bias=True)
    test = gaussian(rng, 40, 3, mean=2.0)
    expected = np.minimum(
        numpy_mahalanobis(test, src.mean(0), cov), numpy_mahalanobis(test, tgt.mean(0), cov)
    )
    np.testing.assert_allclose(scorer.score_samples(test, meta_for(40)), expected, rtol=1e-8)


@pytest.mark.parametrize("estimator", ["ml", "elliptic"])
@pytest.mark.parametrize("strategy", ["min", "pooled"])
def test_shifted_anomalies_score_higher(train, estimator, strategy):
    x, meta = train
    scorer = MahalanobisScorer(estimator, strategy).fit(x, meta)
    rng = np.random.default_rng(3)
    normal, anomaly = gaussian(rng, 100, 4), gaussian(rng, 100, 4, mean=[2.5, -2.5, 0, 0])
    scores = scorer.score_samples(np.concatenate([normal, anomaly]), meta_for(200))
    y = np.r_[np.zeros(100), np.ones(100)]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, scores) > 0.9
    if estimator == "elliptic":
        assert isinstance(scorer.estimators_[("fan", 0)], EllipticEnvelope)
        assert scorer.fallbacks_ == {}


def test_min_strategy_handles_ten_shifted_target_clips():
    """Ten target clips far from the source: 'min' keeps target normals low, pooled cannot."""
    rng = np.random.default_rng(4)
    d, shift = 6, np.full(6, 3.0)
    x = np.concatenate([gaussian(rng, 400, d), gaussian(rng, 10, d, mean=shift)])
    train_meta = meta_for(410, domain=["source"] * 400 + ["target"] * 10)
    anomaly_shift = np.array([2.0, -2.0, 2.0, -2.0, 0, 0])
    test = np.concatenate(
        [
            gaussian(rng, 50, d),  # source normals
            gaussian(rng, 50, d, mean=shift),  # target normals
            gaussian(rng, 50, d, mean=anomaly_shift),  # source anomalies
            gaussian(rng, 50, d, mean=shift + anomaly_shift),  # target anomalies
        ]
    )
    results = pd.DataFrame(
        {
            "machine": "fan",
            "section": 0,
            "domain": np.repeat(["source", "target", "source", "target"], 50),
            "label": np.repeat(["normal", "normal", "anomaly", "anomaly"], 50),
        }
    )
    auc = {}
    for strategy in ("min", "pooled"):
        scorer = MahalanobisScorer("ml", strategy).fit(x, train_meta)
        auc[strategy] = section_scores(
            results.assign(anomaly_score=scorer.score_samples(test, results))
        ).iloc[0]
    assert auc["min"].auc_target > 0.9
    assert auc["min"].auc_target > auc["pooled"].auc_target + 0.05  # here .996 vs .898
    assert auc["min"].pauc > auc["pooled"].pauc


# ---------------------------------------------------------------- thresholds
def test_threshold_is_requested_quantile_of_train_scores(train):
    x, meta = train
    scorer = MahalanobisScorer("ml", "min", threshold_quantile=0.8).fit(x, meta)
    for key, rows in (("fan", slice(0, 300)), ("valve", slice(300, 600))):
        train_scores = scorer.score_samples(x[rows], meta.iloc[rows])
        assert scorer.thresholds_[(key, 0)] == pytest.approx(np.quantile(train_scores, 0.8))
    decisions = scorer.decide(scorer.score_samples(x, meta), meta)
    assert decisions.dtype.kind == "i" and set(np.unique(decisions)) <= {0, 1}
    assert decisions.mean() == pytest.approx(0.2, abs=0.01)
    np.testing.assert_array_equal(scorer.predict(x, meta), decisions)


def test_follows_the_estimator_contract(train):
    """Per-clip values from ``score_samples``, decisions from ``predict``; ``score`` would be
    scikit-learn's scalar, so the scorer has none rather than a per-clip one."""
    x, meta = train
    scorer = MahalanobisScorer("ml", "pooled").fit(x, meta)
    assert scorer.score_samples(x[:5], meta.iloc[:5]).shape == (5,)
    assert scorer.predict(x[:5], meta.iloc[:5]).shape == (5,)
    assert not hasattr(scorer, "score")


def test_fit_uses_only_normal_train_rows(train):
    x, meta = train
    outliers = np.full((5, 4), 100.0)
    full_meta = pd.concat(
        [meta.assign(label="normal", split="train"), meta_for(5, label="anomaly", split="test")],
        ignore_index=True,
    )
    a = MahalanobisScorer("ml", "pooled").fit(np.concatenate([x, outliers]), full_meta)
    b = MahalanobisScorer("ml", "pooled").fit(x, meta)
    np.testing.assert_allclose(a.score_samples(x, meta), b.score_samples(x, meta))


# ----------------------------------------------------------------- fallbacks
def test_fallback_when_fewer_clips_than_dimensions(caplog):
    rng = np.random.default_rng(5)
    x = gaussian(rng, 15, 20)
    with caplog.at_level(logging.WARNING, logger="asd.detect.mahalanobis"):
        scorer = MahalanobisScorer("ml", "pooled").fit(x, meta_for(15))
    assert ("fan", 0) in scorer.fallbacks_ and "rank" in scorer.fallbacks_[("fan", 0)]
    assert isinstance(scorer.estimators_[("fan", 0)], LedoitWolf)
    assert "LedoitWolf" in caplog.text
    assert np.isfinite(scorer.score_samples(gaussian(rng, 5, 20), meta_for(5))).all()


def test_fallback_counts_domain_centres_for_min():
    # 22 clips in 2 domains: rank of the centred clips <= 20 < d = 21, pooled would be fine
    rng = np.random.default_rng(6)
    x = gaussian(rng, 22, 21)
    meta = meta_for(22, domain=["source"] * 12 + ["target"] * 10)
    assert ("fan", 0) in MahalanobisScorer("ml", "min").fit(x, meta).fallbacks_
    assert MahalanobisScorer("ml", "pooled").fit(x, meta).fallbacks_ == {}


@pytest.mark.parametrize("estimator", ["ml", "elliptic"])
def test_fallback_on_dead_dimension(estimator):
    """A constant embedding unit (a dead ReLU) makes the covariance singular."""
    rng = np.random.default_rng(7)
    x = gaussian(rng, 200, 4)
    x[:, 2] = 1.0
    scorer = MahalanobisScorer(estimator, "pooled").fit(x, meta_for(200))
    assert ("fan", 0) in scorer.fallbacks_
    assert isinstance(scorer.estimators_[("fan", 0)], LedoitWolf)
    assert np.isfinite(scorer.score_samples(x, meta_for(200))).all()


def test_elliptic_fallback_when_mcd_support_too_small():
    rng = np.random.default_rng(8)
    x = gaussian(rng, 30, 10)
    scorer = MahalanobisScorer("elliptic", "pooled", support_fraction=0.3).fit(x, meta_for(30))
    assert "MCD support" in scorer.fallbacks_[("fan", 0)]


def test_identical_clips_raise():
    with pytest.raises(AsdError, match="identical"):
        MahalanobisScorer("ml", "pooled").fit(np.ones((10, 3)), meta_for(10))


# ------------------------------------------------------------------- errors
def test_fewer_than_two_clips_names_section_and_count(train):
    x, meta = train
    x = np.concatenate([x, np.zeros((1, 4))])
    meta = pd.concat([meta, meta_for(1, "gearbox", 2)], ignore_index=True)
    with pytest.raises(AsdError, match=r"gearbox section 02: 1 normal"):
        MahalanobisScorer().fit(x, meta)


def test_unknown_section_nan_and_shape_errors(train):
    x, meta = train
    scorer = MahalanobisScorer().fit(x, meta)
    with pytest.raises(AsdError, match="slider section 00 was not seen"):
        scorer.score_samples(x[:3], meta_for(3, "slider"))
    bad = x[:3].copy()
    bad[1, 0] = np.nan
    with pytest.raises(AsdError, match="NaN"):
        scorer.score_samples(bad, meta_for(3))
    with pytest.raises(AsdError, match="NaN"):
        MahalanobisScorer().fit(np.where(np.arange(600)[:, None] == 5, np.nan, x), meta)
    with pytest.raises(AsdError, match="dimensions"):
        scorer.score_samples(x[:3, :2], meta_for(3))
    with pytest.raises(AsdError, match="meta rows"):
        scorer.score_samples(x[:3], meta_for(4))


def test_bad_settings_raise_at_fit(train):
    x, meta = train
    for kwargs in (
        {"estimator": "mcd"},
        {"domain_strategy": "max"},
        {"threshold_quantile": 1.0},
        {"support_fraction": 2.0},
    ):
        with pytest.raises(AsdError, match="scoring"):
            MahalanobisScorer(**kwargs).fit(x, meta)


# ------------------------------------------------------- scikit-learn contract
def test_sklearn_contract(train):
    x, meta = train
    scorer = MahalanobisScorer("elliptic", "pooled", 0.95, 0.8, random_state=3)
    assert scorer.get_params() == {
        "estimator": "elliptic",
        "domain_strategy": "pooled",
        "threshold_quantile": 0.95,
        "support_fraction": 0.8,
        "random_state": 3,
        "threshold_folds": 0,
    }
    assert clone(scorer).get_params() == scorer.get_params()
    assert not hasattr(scorer, "estimators_")
    with pytest.raises(AsdError, match="not fitted"):
        scorer.score_samples(x, meta)
    with pytest.raises(AsdError, match="not fitted"):
        scorer.decide(np.zeros(len(meta)), meta)
    assert scorer.fit(x, meta) is scorer
    assert set(scorer.estimators_) == set(scorer.thresholds_) == {("fan", 0), ("valve", 0)}


def test_from_config():
    cfg = ScoringConfig(
        estimator="elliptic", domain_strategy="pooled", threshold_quantile=0.7, support_fraction=0.5
    )
    scorer = MahalanobisScorer.from_config(cfg)
    assert (scorer.estimator, scorer.domain_strategy) == ("elliptic", "pooled")
    assert (scorer.threshold_quantile, scorer.support_fraction) == (0.7, 0.5)
    # The class default keeps in-sample thresholds; the config asks for out-of-fold ones.
    assert MahalanobisScorer.from_config(ScoringConfig()).get_params() == (
        MahalanobisScorer(threshold_folds=ScoringConfig().threshold_folds).get_params()
    )


# ---------------------------------------------------------------- submission
def test_write_submission_names_and_contents(tmp_path):
    meta = pd.DataFrame(
        {
            "clip": [
                "section_00_0000.wav",
                "section_00_0001.wav",
                "section_01_0000.wav",
                "section_00_0000.wav",
            ],
            "machine": ["fan", "fan", "fan", "ToyCar"],
            "section": [0, 0, 1, 0],
        }
    )
    scores = np.array([0.5, 2.25, 1.0, 3.0])
    decisions = np.array([0, 1, 0, 1])
    paths = write_submission(tmp_path / "sub", meta, scores, decisions)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        f"{kind}_{m}_section_{s}_test.csv"
        for kind in ("anomaly_score", "decision_result")
        for m, s in (("fan", "00"), ("fan", "01"), ("ToyCar", "00"))
    )
    text = (tmp_path / "sub" / "anomaly_score_fan_section_00_test.csv").read_text()
    assert text.splitlines() == ["section_00_0000.wav,0.5", "section_00_0001.wav,2.25"]
    df = pd.read_csv(tmp_path / "sub" / "decision_result_fan_section_00_test.csv", header=None)
    assert df.shape == (2, 2) and list(df[1]) == [0, 1]
    with pytest.raises(AsdError, match="clip"):
        write_submission(tmp_path, meta.drop(columns="clip"), scores, decisions)


@pytest.mark.parametrize("n, d", [(50, 256), (12, 64), (80, 16)])
def test_the_ledoit_wolf_fallback_is_scikit_learns_to_rounding(n, d):
    # fewer clips than dims: the precision comes from an n x n solve, not a d x d inverse
    rng = np.random.default_rng(n + d)
    z = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.1 + 3.0
    ref, ours = LedoitWolf().fit(z), ledoit_wolf(z)
    assert ours.shrinkage_ == pytest.approx(ref.shrinkage_)
    np.testing.assert_allclose(ours.location_, ref.location_)
    np.testing.assert_allclose(ours.covariance_, ref.covariance_, rtol=1e-12, atol=1e-12)
    x = rng.normal(size=(30, d)) + 3.0
    np.testing.assert_allclose(ours.mahalanobis(x), ref.mahalanobis(x), rtol=1e-8)
    np.testing.assert_allclose(ours.get_precision(), ref.get_precision(), rtol=1e-6, atol=1e-8)
