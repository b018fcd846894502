"""Score fusion: per-section standardisation by training statistics, then a weighted sum."""

import numpy as np
import pandas as pd
import pytest

from asd.detect.standardise import section_stats, standardise
from asd.errors import AsdError


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
