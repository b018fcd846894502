"""Score fusion: per-section standardisation by training statistics, then a weighted sum."""

import numpy as np
import pandas as pd
import pytest

from asd.errors import AsdError
from asd.fusion import fit_fusion, section_stats, standardise


def _meta(machines):
    return pd.DataFrame({"machine": machines, "section": 0})


def test_standardise_uses_each_sections_training_mean_and_std():
    fan_train, valve_train = np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0])
    stats = section_stats({("fan", 0): fan_train, ("valve", 0): valve_train})
    assert stats[("fan", 0)] == pytest.approx((2.0, np.std(fan_train)))
    scores = np.array([4.0, 40.0, 2.0])
    got = standardise(scores, _meta(["fan", "valve", "fan"]), stats)
    expected = [(4 - 2) / np.std(fan_train), (40 - 20) / 10.0, 0.0]
    np.testing.assert_allclose(got, expected)


def test_zero_spread_counts_as_one_and_unknown_sections_fail():
    stats = section_stats({("fan", 0): np.array([5.0, 5.0])})
    assert stats[("fan", 0)] == (5.0, 1.0)
    with pytest.raises(AsdError, match="no training statistics"):
        standardise(np.array([1.0]), _meta(["valve"]), stats)


def test_fused_score_is_the_weighted_sum_of_standardised_scores():
    rng = np.random.default_rng(0)
    enc_train = {("fan", 0): rng.normal(50, 10, size=40)}
    ref_train = {("fan", 0): rng.normal(3, 0.5, size=40)}
    fusion = fit_fusion(enc_train, ref_train, weight=0.3, quantile=0.9)
    enc, ref = rng.normal(60, 10, size=7), rng.normal(3, 0.5, size=7)
    meta = _meta(["fan"] * 7)
    z_e = (enc - enc_train[("fan", 0)].mean()) / enc_train[("fan", 0)].std()
    z_r = (ref - ref_train[("fan", 0)].mean()) / ref_train[("fan", 0)].std()
    np.testing.assert_allclose(fusion.score(enc, ref, meta), 0.3 * z_e + 0.7 * z_r)
    fused_train = 0.3 * (
        (enc_train[("fan", 0)] - enc_train[("fan", 0)].mean()) / enc_train[("fan", 0)].std()
    ) + 0.7 * ((ref_train[("fan", 0)] - ref_train[("fan", 0)].mean()) / ref_train[("fan", 0)].std())
    assert fusion.thresholds[("fan", 0)] == pytest.approx(np.quantile(fused_train, 0.9))


@pytest.mark.parametrize("weight, which", [(1.0, "enc"), (0.0, "ref")])
def test_extreme_weights_rank_like_one_scorer(weight, which):
    rng = np.random.default_rng(1)
    train = {("fan", 0): rng.normal(size=20)}
    fusion = fit_fusion(train, {("fan", 0): rng.normal(size=20)}, weight, 0.5)
    enc, ref = rng.normal(size=9), rng.normal(size=9)
    fused = fusion.score(enc, ref, _meta(["fan"] * 9))
    assert np.array_equal(np.argsort(fused), np.argsort(enc if which == "enc" else ref))


def test_mismatched_inputs_fail_clearly():
    a = {("fan", 0): np.ones(3)}
    with pytest.raises(AsdError, match="different sections"):
        fit_fusion(a, {("valve", 0): np.ones(3)}, 0.5, 0.9)
    with pytest.raises(AsdError, match="reference scores"):
        fit_fusion(a, {("fan", 0): np.ones(4)}, 0.5, 0.9)
    with pytest.raises(AsdError, match="fusion_weight"):
        fit_fusion(a, a, 1.5, 0.9)
