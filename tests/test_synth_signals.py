import numpy as np

from asd.data.synth import signals as sig

SR = 16_000


def test_unit_scales_rows_to_rms_one_and_keeps_silent_rows_silent():
    x = np.vstack([np.full(100, 3.0), np.zeros(100)])
    out = sig.unit(x)
    assert np.sqrt(np.mean(out[0] ** 2)) == np.float64(1.0)
    assert not out[1].any()


def test_place_adds_heights_at_their_sample_and_drops_the_ones_outside():
    pos = np.array([[2.0, 2.2, -5.0, 50.0]])
    out = sig.place(pos, np.array([[1.0, 0.5, 9.0, 9.0]]), 10)
    assert out[0, 2] == 1.5
    assert out.sum() == 1.5


def test_gate_is_an_envelope_between_zero_and_one_that_opens_once_per_period():
    t = np.arange(SR) / SR
    env = sig.gate(t, np.array([[0.25]]), np.array([[0.0]]), np.array([[0.1]]), 0.01)
    assert env.min() == 0.0 and env.max() == 1.0
    opens = np.flatnonzero((env[0, 1:] > 0) & (env[0, :-1] == 0))
    assert opens.tolist() == [0, 4000, 8000, 12000]  # each cycle ramps up from 0 at its start


def test_background_is_seeded_rms_one_and_differs_per_clip():
    a = sig.background(np.random.default_rng(3), 2, SR // 4, SR)
    b = sig.background(np.random.default_rng(3), 2, SR // 4, SR)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.sqrt(np.mean(a**2, axis=-1)), 1.0)
    assert not np.allclose(a[0], a[1])
