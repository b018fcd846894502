"""Temporal pooling specs against slow loops written from their definitions."""

import numpy as np
import pytest

from asd.detect.pooling import gwrp_weights, parse_pooling
from asd.errors import AsdError


def _slow_gwrp(row, r):
    ranked = sorted(row, reverse=True)
    num = sum(v * r**i for i, v in enumerate(ranked))
    den = sum(r**i for i in range(len(ranked)))
    return num / den


def _slow_percentile(row, q):
    ranked = sorted(row)
    pos = q / 100 * (len(ranked) - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    return ranked[lo] + (ranked[hi] - ranked[lo]) * (pos - lo)


@pytest.fixture
def frames():
    return np.random.default_rng(0).normal(size=(3, 5, 17))  # (clips, d, T)


@pytest.mark.parametrize("r", [0.0, 0.3, 0.9, 1.0])
def test_gwrp_matches_a_slow_loop(frames, r):
    pooled = parse_pooling(f"gwrp{r}")(frames)
    expected = [[_slow_gwrp(row, r) for row in clip] for clip in frames]
    np.testing.assert_allclose(pooled, expected, rtol=1e-12)


def test_gwrp_ends_are_max_and_mean(frames):
    np.testing.assert_allclose(parse_pooling("gwrp0")(frames), frames.max(axis=-1))
    np.testing.assert_allclose(parse_pooling("gwrp1")(frames), frames.mean(axis=-1))
    assert gwrp_weights(4, 0.5).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
def test_percentile_matches_a_slow_loop(frames, q):
    pooled = parse_pooling(f"p{q}")(frames)
    expected = [[_slow_percentile(row, q) for row in clip] for clip in frames]
    np.testing.assert_allclose(pooled, expected, rtol=1e-12)


def test_concatenation_and_aliases(frames):
    both = parse_pooling("mean+max")(frames)
    np.testing.assert_allclose(both, np.concatenate([frames.mean(-1), frames.max(-1)], axis=-1))
    ms = parse_pooling("meanstd")(frames)
    np.testing.assert_allclose(ms, parse_pooling("mean_std")(frames))
    np.testing.assert_allclose(ms[:, 5:], frames.std(axis=-1))
    assert parse_pooling("meanstd+p90").width(5) == 15


def test_a_single_frame_pools_to_itself():
    one = np.arange(4.0).reshape(4, 1)
    for spec in ("mean", "max", "p75", "gwrp0.5"):
        np.testing.assert_allclose(parse_pooling(spec)(one), np.arange(4.0))


@pytest.mark.parametrize("spec", ["", "median", "gwrp", "gwrp1.5", "p101", "mean+"])
def test_bad_specs_name_the_part(spec):
    with pytest.raises(AsdError, match="pooling"):
        parse_pooling(spec)


def test_twfr_uses_the_published_decay_of_each_machine(frames):
    from asd.detect.pooling import TWFR_DECAYS, TWFR_DEFAULT, per_machine

    assert per_machine("mean+twfr") and not per_machine("gwrp0.5")
    valve = parse_pooling("twfr", "valve")(frames)
    np.testing.assert_allclose(valve, parse_pooling(f"gwrp{TWFR_DECAYS['valve']}")(frames))
    np.testing.assert_allclose(parse_pooling("twfr", "ToyDrone")(frames),
                               parse_pooling(f"gwrp{TWFR_DEFAULT}")(frames))  # fmt: skip
