"""Temporal anomalies for the synthetic data: faults a clip-mean spectrum cannot see.

Why it exists: the spectral anomalies of :mod:`asd.data.synth.tree` add energy at new frequencies,
so
the clip-mean log-mel (the untrained reference) already sees them. Real slider, gearbox,
ToyTrain and bearing faults are partly *temporal*: a rail that stutters, a gear that knocks
once in a while. (Valve needs none: its rendered anomalies are already short events.)
These transforms take a rendered *normal* machine sound and change only when things
happen, each with a graded severity in (0, 1], and rescale every clip to its original RMS,
so the long-term spectrum (and so the clip mean) moves little while a statistic over time
(frame-energy spread, envelope periodicity, peak frames) moves a lot.

Kinds:
- ``irregular``: the clip is cut into segments of about one cycle and a severity-sized share
  of them is shuffled, so events no longer come at a steady pace (spectrum unchanged).
- ``dropout``: a few short intermittent drop-outs (the machine stalls or loses contact),
  depth and count rising with severity.
- ``rhythm``: a slow periodic pulsing of the level at a rate the normal machine does not have
  (a changed working rhythm), depth rising with severity.
- ``transients``: a few sparse, short bursts of the machine's own sound (same spectrum),
  louder with severity.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray
Transform = Callable[[np.random.Generator, Array, Array, int], Array]
"""(rng, normal sound (n, samples), severity (n, 1), sample_rate) -> anomalous (n, samples)."""

_FADE_S = 0.004
"""Cross-fade at segment joins: no splice clicks (they would add broadband energy)."""


def _rms(x: Array) -> Array:
    return np.sqrt(np.mean(x**2, axis=-1, keepdims=True))


def _keep_energy(out: Array, like: Array) -> Array:
    """Rows of ``out`` scaled to the RMS of ``like``: the clip's energy does not give it away."""
    return out * (_rms(like) / np.maximum(_rms(out), 1e-12))


def irregular(rng: np.random.Generator, x: Array, sev: Array, sr: int) -> Array:
    """Shuffle a severity-sized share of roughly cycle-long segments: irregular timing."""
    n, samples = x.shape
    out = x.copy()
    fade = max(int(_FADE_S * sr), 1)
    ramp = np.linspace(0.0, 1.0, fade)
    for row in range(n):
        if sev[row, 0] <= 0:
            continue
        seg = int(rng.uniform(0.08, 0.3) * sr)
        count = samples // seg
        if count < 2:
            continue
        order = np.arange(count)
        moved = rng.permutation(count)[: max(2, int(round(sev[row, 0] * count)))]
        order[np.sort(moved)] = rng.permutation(moved)
        pieces = [x[row, k * seg : (k + 1) * seg].copy() for k in order]
        for piece in pieces:  # soft edges so joins do not click
            piece[:fade] *= ramp
            piece[-fade:] *= ramp[::-1]
        out[row, : count * seg] = np.concatenate(pieces)
    return _keep_energy(out, x)


def dropout(rng: np.random.Generator, x: Array, sev: Array, sr: int) -> Array:
    """A few short intermittent drop-outs whose depth and number rise with severity."""
    n, samples = x.shape
    t = np.arange(samples) / sr
    gain = np.ones((n, samples))
    seconds = samples / sr
    for row in range(n):
        s = sev[row, 0]
        if s <= 0:
            continue
        count = max(1, int(round((1 + 4 * s) * seconds / 4)))
        for _ in range(count):
            start = rng.uniform(0, max(seconds - 0.1, 1e-3))
            length = rng.uniform(0.04, 0.12 + 0.1 * s)
            edge = np.clip(np.minimum(t - start, start + length - t) / 0.005, 0, 1)
            gain[row] *= 1.0 - (0.3 + 0.69 * s) * edge
    return _keep_energy(x * gain, x)


def rhythm(rng: np.random.Generator, x: Array, sev: Array, sr: int) -> Array:
    """A slow periodic pulsing of the level (1.5-5 Hz) the normal machine does not have."""
    n, samples = x.shape
    t = np.arange(samples) / sr
    rate = rng.uniform(1.5, 5.0, (n, 1))
    depth = 0.9 * sev
    pulse = 1.0 + depth * np.sin(2 * np.pi * rate * t[None, :] + rng.uniform(0, 6.3, (n, 1)))
    return _keep_energy(x * pulse, x)


def transients(rng: np.random.Generator, x: Array, sev: Array, sr: int) -> Array:
    """A few sparse, short bursts of the machine's own sound, louder with severity."""
    n, samples = x.shape
    t = np.arange(samples) / sr
    gain = np.ones((n, samples))
    seconds = samples / sr
    for row in range(n):
        s = sev[row, 0]
        if s <= 0:
            continue
        for _ in range(max(1, int(round(rng.uniform(1, 3) * seconds / 4)))):
            start = rng.uniform(0, max(seconds - 0.05, 1e-3))
            length = rng.uniform(0.015, 0.04)
            env = np.exp(-np.maximum(t - start, 0) / length) * (t >= start)
            gain[row] += (1.5 + 5.0 * s) * env
    return _keep_energy(x * gain, x)


TEMPORAL: dict[str, Transform] = {
    "irregular": irregular,
    "dropout": dropout,
    "rhythm": rhythm,
    "transients": transients,
}
"""Every temporal anomaly kind by name."""

MACHINE_KINDS: dict[str, tuple[str, ...]] = {
    "slider": ("irregular", "transients"),
    "gearbox": ("transients", "dropout"),
    "ToyTrain": ("irregular", "transients"),
    "bearing": ("rhythm", "dropout"),
    "shaker": ("irregular", "transients"),
    "bandsaw": ("transients", "dropout"),
}
"""Machine types that get temporal anomalies and which kinds (others: spectral only)."""

TEMPORAL_SHARE = 0.5
"""Share of a temporal machine's anomalous clips that are temporal (the rest spectral)."""


def draw_kinds(rng: np.random.Generator, machine: str, severity: Array) -> list[str | None]:
    """Per clip: the temporal kind it gets, or None (normal clips and spectral anomalies)."""
    kinds = MACHINE_KINDS.get(machine, ())
    n = severity.shape[0]
    temporal = np.asarray(rng.uniform(0, 1, n) < TEMPORAL_SHARE)
    picks = np.asarray(rng.integers(0, max(len(kinds), 1), n))
    return [
        kinds[int(picks[i])] if kinds and severity[i, 0] > 0 and temporal[i] else None
        for i in range(n)
    ]


def apply(
    rng: np.random.Generator, sound: Array, severity: Array, kinds: list[str | None], sr: int
) -> Array:
    """``sound`` with each clip's temporal anomaly (if any) applied at its severity."""
    out = sound.copy()
    for name, transform in TEMPORAL.items():
        rows = np.array([k == name for k in kinds])
        if rows.any():
            out[rows] = transform(rng, sound[rows], severity[rows], sr)
    return out
