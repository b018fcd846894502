"""Signal building blocks for the synthetic data: noise, tones, impulses, envelopes, factory noise.

Why it exists: every machine mechanism in :mod:`asd.data.synth.machines` is assembled from the same
few vectorised pieces (rows are clips, columns samples; per-clip parameters are (n, 1)
columns), and the factory background is shared by all machine types. Levels are set by
explicit gains on RMS-1 rows (:func:`unit`), so recipes read as mixing desks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray


def unit(x: Array) -> Array:
    """Rows scaled to RMS 1 (rows of zeros stay zero): levels are then set by explicit gains."""
    rms = np.sqrt(np.mean(x**2, axis=-1, keepdims=True))
    return x / np.maximum(rms, 1e-12)


def shaped_noise(rng: np.random.Generator, n: int, samples: int, sr: int, gain) -> Array:
    """Gaussian noise with magnitude response ``gain(freqs (F,)) -> (n, F)``, RMS 1 per row."""
    white = rng.standard_normal((n, samples), dtype=np.float32)
    spec = np.fft.rfft(white, axis=-1)
    freqs = np.fft.rfftfreq(samples, 1.0 / sr)
    return unit(np.fft.irfft(spec * gain(freqs), n=samples, axis=-1))


def colour(rng: np.random.Generator, x: Array, sr: int, depth_db: float, bumps: int = 12) -> Array:
    """``x`` through a random smooth gain curve per row (about +-``depth_db``), RMS kept.

    Every real recording is coloured a little differently (where the microphone stood, the
    room, the unit itself): a clip's mean spectrum varies in many directions, not just level.
    """
    n, samples = x.shape
    freqs = np.fft.rfftfreq(samples, 1.0 / sr)
    centres = np.geomspace(60.0, sr / 2, bumps)  # one bump per ~2/3 octave
    pos = np.log(np.maximum(freqs, 30.0))[None, :, None] - np.log(centres)[None, None, :]
    shape = np.exp(-0.5 * (pos / 0.35) ** 2)  # (1, F, bumps)
    db = (shape * rng.normal(0, depth_db, (n, 1, bumps))).sum(-1)  # (n, F)
    out = np.fft.irfft(np.fft.rfft(x, axis=-1) * 10 ** (db / 20), n=samples, axis=-1)
    return unit(out) * np.sqrt(np.mean(x**2, axis=-1, keepdims=True))


def band(center: Array, width: Array) -> Callable[[Array], Array]:
    """A Gaussian band-pass gain (center, width in Hz, shape (n, 1))."""
    return lambda f: np.exp(-0.5 * ((f[None, :] - center) / width) ** 2)


def phase(t: Array, f0: Array, depth: Array, rate: Array, rng: np.random.Generator) -> Array:
    """Running phase (n, samples) of a tone at ``f0`` whose frequency wobbles by ``depth``.

    Real motors never hold one speed: a slow sinusoidal wobble smears the harmonics a little.
    """
    sr = 1.0 / (t[1] - t[0])
    start = rng.uniform(0, 2 * np.pi, f0.shape)
    inst = f0 * (1.0 + depth * np.sin(2 * np.pi * rate * t[None, :] + start))  # (n, samples)
    return 2 * np.pi * np.cumsum(inst, axis=-1) / sr


def harmonics(rng: np.random.Generator, phase: Array, amps: Array) -> Array:
    """Sum of ``amps[:, k] * sin((k + 1) * phase + random phase)`` over k: a periodic source."""
    base = np.mod(phase, 2 * np.pi).astype(np.float32)  # float32 sin is several times faster
    out = np.zeros(np.broadcast_shapes(phase.shape, (amps.shape[0], 1)), dtype=np.float32)
    for k in range(amps.shape[1]):
        offset = rng.uniform(0, 2 * np.pi, (amps.shape[0], 1)).astype(np.float32)
        out += amps[:, k : k + 1].astype(np.float32) * np.sin((k + 1) * base + offset)
    return out.astype(np.float64)


def impulse_train(
    rng: np.random.Generator,
    samples: int,
    sr: int,
    period_s: Array,
    amp: Array,
    jitter: float | Array = 0.02,
    max_events: int | None = None,
) -> Array:
    """Impulses (n, samples) every ``period_s`` with timing jitter and +-20 % amplitude spread."""
    n = period_s.shape[0]
    period = period_s * sr  # (n, 1) in samples
    m = max_events or int(np.ceil(samples / max(float(period.min()), 1.0))) + 2
    first = rng.uniform(0, 1, (n, 1)) * period
    pos = first + np.arange(m)[None, :] * period
    pos = pos + rng.standard_normal((n, m)) * jitter * period
    heights = amp * (1.0 + 0.2 * rng.standard_normal((n, m)))
    return place(pos, heights, samples)


def random_events(
    rng: np.random.Generator, n: int, samples: int, rate_hz: Array, amp: Array | float, sr: int
) -> Array:
    """Poisson-like impulses (n, samples) at ``rate_hz`` per clip (vectorised: a fixed cap)."""
    seconds = samples / sr
    cap = int(np.ceil(float(rate_hz.max()) * seconds * 2)) + 2
    pos = rng.uniform(0, samples, (n, cap))
    keep = rng.uniform(0, 1, (n, cap)) < (rate_hz * seconds / cap)
    heights = amp * rng.uniform(0.3, 1.0, (n, cap)) * keep
    return place(pos, heights, samples)


def place(pos: Array, heights: Array, samples: int) -> Array:
    """Scatter ``heights`` at sample positions ``pos`` (n, m) into (n, samples)."""
    n, m = pos.shape
    out = np.zeros((n, samples))
    idx = np.round(pos).astype(np.int64)
    ok = (idx >= 0) & (idx < samples) & (heights != 0)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, m))
    np.add.at(out, (rows[ok], idx[ok]), heights[ok])
    return out


def ring(impulses: Array, freq: Array, decay_s: Array | float, sr: int) -> Array:
    """Impulses through a damped resonance (freq, decay per row): clicks, clacks, knocks.

    Circular convolution: a ring that runs past the end reappears at the start, which a
    stationary machine sound cannot tell apart and which saves a padded FFT.
    """
    n, samples = impulses.shape
    k = min(int(0.06 * sr), samples)
    tk = np.arange(k) / sr
    kernel = np.exp(-tk[None, :] / decay_s) * np.sin(2 * np.pi * freq * tk[None, :])  # (n, k)
    spec = np.fft.rfft(impulses, axis=-1) * np.fft.rfft(kernel, samples, axis=-1)
    return np.fft.irfft(spec, samples, axis=-1)


def gate(t: Array, period_s: Array, offset_s: Array, on_s: Array, ramp_s: float) -> Array:
    """A periodic trapezoid envelope (n, samples): 1 while on, smooth edges of ``ramp_s``."""
    u = np.mod(t[None, :] - offset_s, period_s)  # time since the cycle started
    rise = np.clip(u / ramp_s, 0, 1)
    fall = np.clip((on_s - u) / ramp_s, 0, 1)
    return np.minimum(rise, fall)


def windows(
    starts_s: Array, lengths_s: Array, samples: int, sr: int, ramp_s: float = 0.005
) -> Array:
    """An envelope (n, samples): 1 inside each window ``[start, start + length)`` (n, m), else 0.

    Unlike :func:`gate` the windows need not be periodic: irregular strokes and rare events.
    Windows of length <= 0 are skipped; edges are smoothed over ``ramp_s`` (no clicks).
    """
    on = lengths_s > 0
    edges = place(starts_s * sr, on * 1.0, samples) - place(
        (starts_s + lengths_s) * sr, on * 1.0, samples
    )
    box = np.clip(np.cumsum(edges, axis=-1), 0.0, 1.0)
    k = max(int(ramp_s * sr), 1)
    run = np.cumsum(np.pad(box, ((0, 0), (k, 0))), axis=-1)
    return (run[:, k:] - run[:, :-k]) / k  # moving average: linear ramps of k samples


def local_unit(x: Array, env: Array) -> Array:
    """Rows of ``x`` scaled to RMS 1 *where ``env`` is on*: an event's level is its own loudness.

    :func:`unit` would spread a sparse event's energy over the whole clip, so its loudness
    would depend on the clip length and on how many events there are.
    """
    active = np.maximum(np.mean(env**2, axis=-1, keepdims=True), 1e-12)
    return unit(x) * np.sqrt(active)


def strokes(rng: np.random.Generator, n: int, seconds: float, cycle: Array, spread: float) -> Array:
    """Start times (n, m) of operating strokes, ``cycle`` apart on average.

    Each gap is drawn in ``cycle * (1 +- spread)``: a machine that works to a pattern, not to
    a clock (a valve switched by a controller).
    """
    m = int(seconds / (float(cycle.min()) * (1 - spread))) + 2
    gaps = cycle * rng.uniform(1 - spread, 1 + spread, (n, m))
    return rng.uniform(0, 1, (n, 1)) * cycle + np.cumsum(gaps, axis=-1) - gaps[:, :1]


def rare_events(
    rng: np.random.Generator, severity: Array, seconds: float, shortest: float, longest: float
) -> tuple[Array, Array]:
    """(starts, lengths) (n, m) in s of a few short events per clip with severity > 0.

    One to ``1 + ceil(seconds / 4)`` events of ``shortest``-``longest`` s at random times: they
    fill a few per cent of a clip of any length, so its mean spectrum hardly moves, while the
    loudest frame of each band they reach does. Rows of severity 0 get no event (length 0).
    """
    n = severity.shape[0]
    m = 1 + int(np.ceil(seconds / 4))
    count = 1 + rng.binomial(m - 1, 0.5, (n, 1))
    lengths = rng.uniform(shortest, longest, (n, m))
    lengths = lengths * (np.arange(m)[None, :] < count) * (severity > 0)
    starts = rng.uniform(0, 1, (n, m)) * np.maximum(seconds - lengths, 0.0)
    return starts, lengths


def level(severity: Array, low_db: float, high_db: float) -> Array:
    """Amplitude per clip rising from ``low_db`` at severity 0 to ``high_db`` at 1 (0 if normal)."""
    return 10 ** ((low_db + (high_db - low_db) * severity) / 20) * (severity > 0)


def uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> Array:
    """Per-clip uniform draws as a column (n, 1): the shape every recipe broadcasts with."""
    return rng.uniform(lo, hi, (n, 1))


def split_kinds(rng: np.random.Generator, severity: Array, kinds: int) -> list[Array]:
    """Put each anomalous clip's severity on one of ``kinds`` anomaly types (zero elsewhere)."""
    choice = rng.integers(0, kinds, severity.shape)
    return [severity * (choice == k) for k in range(kinds)]


def background(rng: np.random.Generator, n: int, samples: int, sr: int) -> Array:
    """Factory noise, RMS 1: coloured noise with a random hump, mains hum, distant impacts."""
    tilt = uniform(rng, 0.6, 1.4, n)
    hump_f = np.exp(uniform(rng, np.log(150), np.log(2500), n))
    hump_a = uniform(rng, 0.0, 3.0, n)

    def gain(f: Array) -> Array:
        f = np.maximum(f[None, :], 30.0)
        hump = 1 + hump_a * np.exp(-0.5 * (np.log(f / hump_f) / 0.5) ** 2)
        return f ** (-tilt / 2) * hump

    noise = shaped_noise(rng, n, samples, sr, gain)
    t = np.arange(samples) / sr
    mains = np.where(rng.uniform(0, 1, (n, 1)) < 0.5, 50.0, 60.0)
    hum = harmonics(rng, 2 * np.pi * mains * t[None, :], rng.uniform(0, 0.3, (n, 4)))
    knocks = ring(
        random_events(rng, n, samples, uniform(rng, 0.0, 3.0, n), 1.0, sr),
        uniform(rng, 300, 3000, n),
        uniform(rng, 0.005, 0.03, n),
        sr,
    )
    return unit(noise + hum + 0.5 * unit(knocks) * uniform(rng, 0, 1, n))
