"""A synthetic DCASE 2023 Task 2 tree: the real layout and names, sounds from simple physics.

Why it exists: tests, CI and the README demo need data that behaves like the real thing
(seven machine types with their own spectra, a source/target domain shift, few target clips,
anomalies from subtle to obvious, factory noise) without a 100 GB download.

Every machine type has its own mechanism (motor harmonics, rail clacks, a bearing resonance,
blade-pass tones, gear mesh sidebands, sliding bursts, valve clicks) driven by one operating
value ``op`` (speed or rate). The target domain shifts ``op``; each clip varies its own
parameters a little; anomalies are mechanism-specific (defect impulses, imbalance, rattle,
leaks, ...) with a severity drawn per clip, so a simple spectral detector does well above
chance but far from perfectly. Everything is vectorised over a chunk of clips and seeded:
the same seed writes byte-identical files.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asd.data import DEV_MACHINES, EVAL_MACHINES
from asd.errors import AsdError
from asd.synth_temporal import apply as apply_temporal
from asd.synth_temporal import draw_kinds

Array = np.ndarray
Render = Callable[[np.random.Generator, Array, Array, Array, int], Array]
"""(rng, t (samples,), op (n, 1), severity (n, 1), sample_rate) -> machine sound (n, samples)."""

_CHUNK = 32
"""Clips rendered together: bounds memory for long clips and keeps seeding independent of n."""


# --------------------------------------------------------------------------- building blocks


def _unit(x: Array) -> Array:
    """Rows scaled to RMS 1 (rows of zeros stay zero): levels are then set by explicit gains."""
    rms = np.sqrt(np.mean(x**2, axis=-1, keepdims=True))
    return x / np.maximum(rms, 1e-12)


def _shaped_noise(rng: np.random.Generator, n: int, samples: int, sr: int, gain) -> Array:
    """Gaussian noise with magnitude response ``gain(freqs (F,)) -> (n, F)``, RMS 1 per row."""
    white = rng.standard_normal((n, samples), dtype=np.float32)
    spec = np.fft.rfft(white, axis=-1)
    freqs = np.fft.rfftfreq(samples, 1.0 / sr)
    return _unit(np.fft.irfft(spec * gain(freqs), n=samples, axis=-1))


def _band(center: Array, width: Array) -> Callable[[Array], Array]:
    """A Gaussian band-pass gain (center, width in Hz, shape (n, 1))."""
    return lambda f: np.exp(-0.5 * ((f[None, :] - center) / width) ** 2)


def _phase(t: Array, f0: Array, depth: Array, rate: Array, rng: np.random.Generator) -> Array:
    """Running phase (n, samples) of a tone at ``f0`` whose frequency wobbles by ``depth``.

    Real motors never hold one speed: a slow sinusoidal wobble smears the harmonics a little.
    """
    sr = 1.0 / (t[1] - t[0])
    start = rng.uniform(0, 2 * np.pi, f0.shape)
    inst = f0 * (1.0 + depth * np.sin(2 * np.pi * rate * t[None, :] + start))  # (n, samples)
    return 2 * np.pi * np.cumsum(inst, axis=-1) / sr


def _harmonics(rng: np.random.Generator, phase: Array, amps: Array) -> Array:
    """Sum of ``amps[:, k] * sin((k + 1) * phase + random phase)`` over k: a periodic source."""
    base = np.mod(phase, 2 * np.pi).astype(np.float32)  # float32 sin is several times faster
    out = np.zeros(np.broadcast_shapes(phase.shape, (amps.shape[0], 1)), dtype=np.float32)
    for k in range(amps.shape[1]):
        offset = rng.uniform(0, 2 * np.pi, (amps.shape[0], 1)).astype(np.float32)
        out += amps[:, k : k + 1].astype(np.float32) * np.sin((k + 1) * base + offset)
    return out.astype(np.float64)


def _impulse_train(
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
    return _place(pos, heights, samples)


def _random_events(
    rng: np.random.Generator, n: int, samples: int, rate_hz: Array, amp: Array | float, sr: int
) -> Array:
    """Poisson-like impulses (n, samples) at ``rate_hz`` per clip (vectorised: a fixed cap)."""
    seconds = samples / sr
    cap = int(np.ceil(float(rate_hz.max()) * seconds * 2)) + 2
    pos = rng.uniform(0, samples, (n, cap))
    keep = rng.uniform(0, 1, (n, cap)) < (rate_hz * seconds / cap)
    heights = amp * rng.uniform(0.3, 1.0, (n, cap)) * keep
    return _place(pos, heights, samples)


def _place(pos: Array, heights: Array, samples: int) -> Array:
    """Scatter ``heights`` at sample positions ``pos`` (n, m) into (n, samples)."""
    n, m = pos.shape
    out = np.zeros((n, samples))
    idx = np.round(pos).astype(np.int64)
    ok = (idx >= 0) & (idx < samples) & (heights != 0)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, m))
    np.add.at(out, (rows[ok], idx[ok]), heights[ok])
    return out


def _ring(impulses: Array, freq: Array, decay_s: Array, sr: int) -> Array:
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


def _gate(t: Array, period_s: Array, offset_s: Array, on_s: Array, ramp_s: float) -> Array:
    """A periodic trapezoid envelope (n, samples): 1 while on, smooth edges of ``ramp_s``."""
    u = np.mod(t[None, :] - offset_s, period_s)  # time since the cycle started
    rise = np.clip(u / ramp_s, 0, 1)
    fall = np.clip((on_s - u) / ramp_s, 0, 1)
    return np.minimum(rise, fall)


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> Array:
    """Per-clip uniform draws as a column (n, 1): the shape every recipe broadcasts with."""
    return rng.uniform(lo, hi, (n, 1))


def _kind(rng: np.random.Generator, severity: Array, kinds: int) -> list[Array]:
    """Put each anomalous clip's severity on one of ``kinds`` anomaly types (zero elsewhere)."""
    choice = rng.integers(0, kinds, severity.shape)
    return [severity * (choice == k) for k in range(kinds)]


def _background(rng: np.random.Generator, n: int, samples: int, sr: int) -> Array:
    """Factory noise, RMS 1: coloured noise with a random hump, mains hum, distant impacts."""
    tilt = _u(rng, 0.6, 1.4, n)
    hump_f = np.exp(_u(rng, np.log(150), np.log(2500), n))
    hump_a = _u(rng, 0.0, 3.0, n)

    def gain(f: Array) -> Array:
        f = np.maximum(f[None, :], 30.0)
        hump = 1 + hump_a * np.exp(-0.5 * (np.log(f / hump_f) / 0.5) ** 2)
        return f ** (-tilt / 2) * hump

    noise = _shaped_noise(rng, n, samples, sr, gain)
    t = np.arange(samples) / sr
    mains = np.where(rng.uniform(0, 1, (n, 1)) < 0.5, 50.0, 60.0)
    hum = _harmonics(rng, 2 * np.pi * mains * t[None, :], rng.uniform(0, 0.3, (n, 4)))
    knocks = _ring(
        _random_events(rng, n, samples, _u(rng, 0.0, 3.0, n), 1.0, sr),
        _u(rng, 300, 3000, n),
        _u(rng, 0.005, 0.03, n),
        sr,
    )
    return _unit(noise + hum + 0.5 * _unit(knocks) * _u(rng, 0, 1, n))


# --------------------------------------------------------------------------- machine recipes
# Each recipe: (rng, t, op, severity, sr) -> (n, samples). The normal sound is built to RMS 1
# and anomalies are added relative to it, so severity is a level, not an absolute loudness.


def _toycar(rng, t, op, sev, sr):
    """Toy car: DC-motor harmonics, gear whine, road rumble; anomalies tick, whine, wobble."""
    n, samples = sev.shape[0], t.size
    f0 = 110.0 * op * _u(rng, 0.97, 1.03, n)
    phase = _phase(t, f0, _u(rng, 0.002, 0.01, n), _u(rng, 0.3, 2.0, n), rng)
    amps = (1.0 / np.arange(1, 9)) * rng.uniform(0.6, 1.4, (n, 8))
    motor = _harmonics(rng, phase, amps)
    whine = _harmonics(rng, 7.0 * phase, _u(rng, 0.1, 0.3, n))
    rumble = _shaped_noise(rng, n, samples, sr, lambda f: 1.0 / (1.0 + (f[None, :] / 250.0) ** 2))
    normal = _unit(_unit(motor) + 0.3 * _unit(whine) + _u(rng, 0.3, 0.8, n) * rumble)
    tick, bad_whine, wobble = _kind(rng, sev, 3)
    wheel = f0 / 12.0
    ticks = _ring(
        _impulse_train(rng, samples, sr, 1.0 / wheel, 1.0),
        _u(rng, 2500, 4000, n),
        _u(rng, 0.002, 0.005, n),
        sr,
    )
    extra = _harmonics(rng, 7.5 * phase, np.ones((n, 1)))  # a chipped gear: whine off its order
    am = 1.0 + 1.2 * wobble * np.sin(2 * np.pi * wheel * t[None, :])
    return normal * am + 0.8 * tick * _unit(ticks) + 0.9 * bad_whine * _unit(extra)


def _toytrain(rng, t, op, sev, sr):
    """Toy train: rail-joint double clacks, motor hum, rolling noise; flat wheel, scrape."""
    n, samples = sev.shape[0], t.size
    f0 = 85.0 * op * _u(rng, 0.97, 1.03, n)
    motor = _harmonics(
        rng,
        _phase(t, f0, _u(rng, 0.002, 0.01, n), _u(rng, 0.3, 2.0, n), rng),
        (1.0 / np.arange(1, 7) ** 1.5) * rng.uniform(0.6, 1.4, (n, 6)),
    )
    joint = 0.3 / op * _u(rng, 0.95, 1.05, n)
    imp = _impulse_train(rng, samples, sr, joint, 1.0, jitter=0.01)
    lag = int(0.05 * sr)
    imp = imp + 0.7 * np.roll(imp, lag, axis=-1)  # the second bogie crosses the same joint
    clacks = _ring(imp, _u(rng, 1500, 2200, n), _u(rng, 0.005, 0.012, n), sr)
    rolling = _shaped_noise(rng, n, samples, sr, _band(_u(rng, 600, 900, n), _u(rng, 300, 500, n)))
    normal = _unit(_unit(motor) + _unit(clacks) * _u(rng, 0.8, 1.2, n) + 0.4 * rolling)
    flat, scrape, slip = _kind(rng, sev, 3)
    flats = _ring(
        _impulse_train(rng, samples, sr, 1.0 / (f0 / 10.0), 1.0),
        _u(rng, 3000, 4500, n),
        _u(rng, 0.002, 0.004, n),
        sr,
    )
    scraping = _shaped_noise(rng, n, samples, sr, _band(_u(rng, 4000, 5500, n), 600.0))
    scraping = scraping * _gate(
        t, _u(rng, 0.2, 0.6, n), _u(rng, 0, 0.5, n), _u(rng, 0.05, 0.15, n), 0.01
    )
    slipping = _harmonics(rng, _phase(t, 1.35 * f0, 0.01, 1.0, rng), np.ones((n, 2)) * [1.0, 0.5])
    return (
        normal
        + 0.8 * flat * _unit(flats)
        + 0.6 * scrape * _unit(scraping)
        + 0.5 * slip * _unit(slipping)
    )


def _bearing(rng, t, op, sev, sr):
    """Bearing: a structural resonance amplitude-modulated at shaft rate; defect impulse trains."""
    n, samples = sev.shape[0], t.size
    shaft = 25.0 * op * _u(rng, 0.98, 1.02, n)
    res_f = _u(rng, 3000, 3400, n)
    res = _shaped_noise(rng, n, samples, sr, _band(res_f, _u(rng, 150, 300, n)))
    am = 1.0 + _u(rng, 0.2, 0.4, n) * np.sin(2 * np.pi * shaft * t[None, :] + _u(rng, 0, 6.3, n))
    low = _harmonics(rng, _phase(t, shaft, 0.003, 0.5, rng), rng.uniform(0.3, 1.0, (n, 3)))
    broad = _shaped_noise(rng, n, samples, sr, lambda f: 1.0 / (1.0 + f[None, :] / 500.0))
    normal = _unit(_unit(res * am) + 0.5 * _unit(low) + 0.4 * broad)
    outer, inner = _kind(rng, sev, 2)
    bpfo = _ring(
        _impulse_train(rng, samples, sr, 1.0 / (3.58 * shaft), 1.0, jitter=0.01),
        _u(rng, 4200, 5200, n),
        _u(rng, 0.001, 0.002, n),
        sr,
    )
    bpfi = _ring(
        _impulse_train(rng, samples, sr, 1.0 / (5.42 * shaft), 1.0, jitter=0.01),
        res_f,
        _u(rng, 0.001, 0.002, n),
        sr,
    ) * (1.0 + np.sin(2 * np.pi * shaft * t[None, :]))  # inner race: modulated by the load zone
    return normal + 0.7 * outer * _unit(bpfo) + 0.7 * inner * _unit(bpfi)


def _fan(rng, t, op, sev, sr):
    """Fan: broadband airflow plus blade-pass harmonics; imbalance wobble, rubbing bursts."""
    n, samples = sev.shape[0], t.size
    shaft = 22.0 * op * _u(rng, 0.98, 1.02, n)
    blades = 7.0
    phase = _phase(t, shaft, _u(rng, 0.002, 0.008, n), _u(rng, 0.2, 1.0, n), rng)
    bpf = _harmonics(rng, blades * phase, (0.6 ** np.arange(4)) * rng.uniform(0.7, 1.3, (n, 4)))
    hump = _u(rng, 500, 800, n) * op

    def air(f: Array) -> Array:
        return 1.0 / (1.0 + (f[None, :] / hump) ** 2) + 0.1 / (1.0 + f[None, :] / 4000.0)

    airflow = _shaped_noise(rng, n, samples, sr, air)
    normal = _unit(_unit(airflow) + _u(rng, 0.4, 0.7, n) * _unit(bpf))
    imbalance, rubbing = _kind(rng, sev, 2)
    wobble = 1.0 + 0.8 * imbalance * np.sin(phase)
    one_x = _harmonics(rng, phase, np.ones((n, 2)) * [1.0, 0.4])
    rub = _shaped_noise(rng, n, samples, sr, _band(_u(rng, 2500, 4000, n), 800.0))
    rub = rub * _gate(t, 1.0 / shaft, _u(rng, 0, 0.05, n), 0.25 / shaft, 0.002)
    return normal * wobble + 0.8 * imbalance * _unit(one_x) + 0.8 * rubbing * _unit(rub)


def _gearbox(rng, t, op, sev, sr):
    """Gearbox: mesh frequency with shaft-rate sidebands; broken tooth, wear."""
    n, samples = sev.shape[0], t.size
    shaft = 14.0 * op * _u(rng, 0.98, 1.02, n)
    teeth = 23.0
    shaft_phase = _phase(t, shaft, _u(rng, 0.001, 0.005, n), _u(rng, 0.2, 1.0, n), rng)
    mesh = teeth * shaft_phase
    side = 1.0 + _u(rng, 0.05, 0.15, n) * np.sin(shaft_phase)  # mild eccentricity
    tones = _harmonics(rng, mesh, (0.5 ** np.arange(3)) * rng.uniform(0.7, 1.3, (n, 3))) * side
    oil = _shaped_noise(rng, n, samples, sr, lambda f: 1.0 / (1.0 + (f[None, :] / 1500.0) ** 2))
    normal = _unit(_unit(tones) + _u(rng, 0.3, 0.6, n) * oil)
    broken, wear = _kind(rng, sev, 2)
    knocks = _ring(
        _impulse_train(rng, samples, sr, 1.0 / shaft, 1.0, jitter=0.005),
        _u(rng, 2000, 3000, n),
        _u(rng, 0.002, 0.006, n),
        sr,
    )
    worn = _harmonics(rng, mesh, np.ones((n, 3)) * [0.0, 1.0, 0.8]) * (
        1.0 + np.sin(2 * shaft_phase)
    )
    return normal + 0.8 * broken * _unit(knocks) + 0.6 * wear * _unit(worn)


def _slider(rng, t, op, sev, sr):
    """Slide rail: periodic sliding bursts ending in end-stop clicks; rattle, friction squeal."""
    n, samples = sev.shape[0], t.size
    stroke = 0.5 / op * _u(rng, 0.96, 1.04, n)
    offset = _u(rng, 0, 0.5, n)
    on = 0.6 * stroke
    env = _gate(t, stroke, offset, on, 0.03)
    slide = _shaped_noise(rng, n, samples, sr, _band(_u(rng, 1200, 1600, n) * op**0.5, 700.0))
    events = int(t[-1] / float(stroke.min())) + 2
    stop_times = (offset + on + np.arange(events)[None, :] * stroke) * sr
    stops = _ring(
        _place(stop_times, np.ones((n, events)), samples),
        _u(rng, 900, 1400, n),
        _u(rng, 0.004, 0.01, n),
        sr,
    )
    hum = _harmonics(
        rng, 2 * np.pi * 100.0 * t[None, :] * np.ones((n, 1)), rng.uniform(0, 1, (n, 3))
    )
    normal = _unit(_unit(slide * env) + 0.6 * _unit(stops) + 0.2 * _unit(hum))
    rattle, squeal = _kind(rng, sev, 2)
    rattles = (
        _ring(
            _random_events(rng, n, samples, _u(rng, 20, 40, n), 1.0, sr),
            _u(rng, 3500, 5000, n),
            0.002,
            sr,
        )
        * env
    )
    squeals = (
        _harmonics(rng, _phase(t, _u(rng, 2200, 3200, n), 0.01, 5.0, rng), np.ones((n, 1))) * env
    )
    return normal + 0.8 * rattle * _unit(rattles) + 0.5 * squeal * _unit(squeals)


def _valve(rng, t, op, sev, sr):
    """Solenoid valve: open/close clicks and flow hiss while open; leak hiss, timing faults."""
    n, samples = sev.shape[0], t.size
    cycle = 0.4 / op * _u(rng, 0.97, 1.03, n)
    offset = _u(rng, 0, 0.4, n)
    leak, timing = _kind(rng, sev, 2)
    open_s = cycle * (0.45 + 0.3 * timing) * _u(rng, 0.95, 1.05, n)  # a sticky valve stays open
    events = int(t[-1] / float(cycle.min())) + 2
    starts = offset + np.arange(events)[None, :] * cycle
    ones = np.ones((n, events))
    clicks_open = _ring(_place(starts * sr, ones, samples), _u(rng, 2600, 3000, n), 0.004, sr)
    clicks_close = _ring(
        _place((starts + open_s) * sr, ones, samples), _u(rng, 1700, 2100, n), 0.006, sr
    )
    env = _gate(t, cycle, offset, open_s, 0.01)
    hiss = _shaped_noise(
        rng, n, samples, sr, lambda f: (f[None, :] / 4000.0) / (1 + (f[None, :] / 4000.0) ** 2)
    )
    pump = _harmonics(
        rng, 2 * np.pi * 50.0 * t[None, :] * np.ones((n, 1)), rng.uniform(0, 1, (n, 3))
    )
    normal = _unit(
        _unit(clicks_open) + 0.8 * _unit(clicks_close) + 0.5 * _unit(hiss * env) + 0.2 * _unit(pump)
    )
    whistle = _shaped_noise(rng, n, samples, sr, _band(_u(rng, 5000, 6500, n), 500.0))
    return normal + 0.7 * leak * _unit(whistle * (1.0 - env)) + 0.5 * timing * _unit(hiss * env)


@dataclass(frozen=True)
class _Spec:
    """How one machine type is drawn and named."""

    render: Render
    template: str
    """Attribute part of the file name; ``{v}`` is replaced by the operating value's label."""
    source: tuple[tuple[str, float], ...]
    """(label, op) pairs of the source domain: train clips draw among them."""
    target: tuple[tuple[str, float], ...]
    """(label, op) pairs of the target domain: a shifted operating point."""
    scale: float = 1.0
    """Multiplies ``op``: lets eval machines reuse a dev mechanism at other speeds."""


_SPECS: dict[str, _Spec] = {
    "ToyCar": _Spec(_toycar, "car_A1_spd_{v}_mic_1", (("28V", 1.0), ("31V", 1.1)), (("37V", 1.3),)),
    "ToyTrain": _Spec(_toytrain, "car_E1_spd_{v}_mic_1", (("6", 1.0), ("7", 1.15)), (("9", 1.4),)),
    "bearing": _Spec(_bearing, "vel_{v}_loc_A", (("6", 1.0), ("8", 1.15)), (("12", 1.35),)),
    "fan": _Spec(_fan, "m-n_W_spd_{v}", (("1.0", 1.0), ("1.1", 1.1)), (("1.3", 1.3),)),
    "gearbox": _Spec(_gearbox, "volt_{v}_wt_30", (("1.0", 1.0), ("1.3", 1.12)), (("2.0", 1.35),)),
    "slider": _Spec(_slider, "vel_{v}_ac_0.03", (("300", 1.0), ("400", 1.15)), (("600", 1.4),)),
    "valve": _Spec(_valve, "pat_{v}_panel_open", (("00", 1.0), ("01", 1.1)), (("03", 1.3),)),
    "ToyDrone": _Spec(_fan, "mode_{v}_noise_1", (("A", 1.0), ("B", 1.1)), (("C", 1.3),), 3.0),
    "ToyNscale": _Spec(_toytrain, "train_B_spd_{v}", (("5", 1.0), ("6", 1.1)), (("8", 1.35),), 0.8),
    "ToyTank": _Spec(_toycar, "spd_{v}_mic_2", (("20V", 1.0), ("22V", 1.1)), (("26V", 1.3),), 0.7),
    "Vacuum": _Spec(_fan, "noAttribute", (("", 1.0),), (("", 1.3),), 1.8),
    "bandsaw": _Spec(_gearbox, "vel_{v}", (("1", 1.0), ("2", 1.12)), (("4", 1.35),), 1.5),
    "grinder": _Spec(
        _bearing, "grindstone_1_speed_{v}", (("3", 1.0), ("4", 1.1)), (("6", 1.3),), 1.6
    ),
    "shaker": _Spec(_slider, "speed_{v}", (("50", 1.0), ("60", 1.12)), (("80", 1.4),), 0.8),
}


# --------------------------------------------------------------------------- the tree


@dataclass
class _Clip:
    name: str
    domain: str
    op: float
    severity: float


def synthesize(
    out: str | Path,
    machines: Sequence[str] | None = DEV_MACHINES,
    train_source: int = 40,
    train_target: int = 4,
    test_per_domain: int = 10,
    seconds: float = 2.0,
    sample_rate: int = 16_000,
    seed: int = 0,
    eval_machines: Sequence[str] = (),
) -> Path:
    """Write a synthetic DCASE 2023 Task 2 tree under ``out`` and return ``out``.

    ``<out>/dev_data/raw/<machine>/train`` holds ``train_source`` + ``train_target`` normal
    clips, ``test`` holds ``test_per_domain`` normal and as many anomalous clips per domain,
    all with dev-style names. ``eval_machines`` go to ``<out>/eval_data/raw`` with unlabeled
    test names and headerless ground-truth CSVs in ``<out>/ground_truth`` (labels) and
    ``<out>/ground_truth/domain`` (0 source / 1 target). Same arguments, same bytes.
    """
    out = Path(out)
    machines = tuple(DEV_MACHINES if machines is None else machines)
    eval_machines = tuple(eval_machines)
    for name, allowed in ((machines, DEV_MACHINES), (eval_machines, EVAL_MACHINES)):
        unknown = [m for m in name if m not in allowed]
        if unknown:
            raise AsdError(
                f"unknown machine type(s) {', '.join(unknown)} (known: {', '.join(allowed)})"
            )
    if train_source < 1 or train_target < 0 or test_per_domain < 1:
        raise AsdError("synth needs train_source >= 1, train_target >= 0, test_per_domain >= 1")
    if seconds <= 0 or sample_rate < 8000:
        raise AsdError("synth needs seconds > 0 and sample_rate >= 8000")
    samples = int(round(seconds * sample_rate))
    for subset, group in (("dev_data", machines), ("eval_data", eval_machines)):
        for machine in group:
            rng = np.random.default_rng([seed, _machine_id(machine)])
            spec = _SPECS[machine]
            train = _plan(rng, spec, "source", "train", "normal", train_source) + _plan(
                rng, spec, "target", "train", "normal", train_target
            )
            test = [
                clip
                for domain in ("source", "target")
                for label in ("normal", "anomaly")
                for clip in _plan(rng, spec, domain, "test", label, test_per_domain)
            ]
            folder = out / subset / "raw" / machine
            _render_all(folder / "train", train, spec, samples, sample_rate, seed, machine, 0)
            if subset == "eval_data":
                test = _eval_names(rng, test, out / "ground_truth", machine)
            _render_all(folder / "test", test, spec, samples, sample_rate, seed, machine, 1)
    return out


def _machine_id(machine: str) -> int:
    """A stable number per machine name: seeds do not depend on which machines are asked for."""
    return zlib.crc32(machine.encode())


def _plan(
    rng: np.random.Generator, spec: _Spec, domain: str, split: str, label: str, count: int
) -> list[_Clip]:
    """Names, operating points and severities of ``count`` clips of one kind."""
    values = spec.source if domain == "source" else spec.target
    picks = rng.integers(0, len(values), count)
    # Severity: uniform^1.5 over (0.1, 1] puts many anomalies near the subtle end.
    severity = (
        0.1 + 0.9 * rng.uniform(0, 1, count) ** 1.5 if label == "anomaly" else np.zeros(count)
    )
    clips = []
    for i in range(count):
        value, op = values[picks[i]]
        attrs = spec.template.format(v=value)
        name = f"section_00_{domain}_{split}_{label}_{i:04d}_{attrs}.wav"
        clips.append(_Clip(name, domain, op * spec.scale, float(severity[i])))
    return clips


def _eval_names(
    rng: np.random.Generator, clips: list[_Clip], gt: Path, machine: str
) -> list[_Clip]:
    """Shuffle test clips under eval names ``section_00_0000.wav`` and write ground truth."""
    order = rng.permutation(len(clips))
    renamed = []
    labels, domains = [], []
    for new, old in enumerate(order):
        clip = clips[old]
        name = f"section_00_{new:04d}.wav"
        renamed.append(_Clip(name, clip.domain, clip.op, clip.severity))
        labels.append(f"{name},{int(clip.severity > 0)}\n")
        domains.append(f"{name},{int(clip.domain == 'target')}\n")
    csv = f"ground_truth_{machine}_section_00_test.csv"
    (gt / "domain").mkdir(parents=True, exist_ok=True)
    (gt / csv).write_text("".join(labels))
    (gt / "domain" / csv).write_text("".join(domains))
    return renamed


def _render_all(
    folder: Path,
    clips: list[_Clip],
    spec: _Spec,
    samples: int,
    sr: int,
    seed: int,
    machine: str,
    split_id: int,
) -> None:
    """Render clips in chunks (each with its own seed) and write them as 16-bit PCM WAV."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(samples) / sr
    for c, start in enumerate(range(0, len(clips), _CHUNK)):
        chunk = clips[start : start + _CHUNK]
        rng = np.random.default_rng([seed, _machine_id(machine), split_id, c])
        n = len(chunk)
        op = np.array([clip.op for clip in chunk])[:, None]
        sev = np.array([clip.severity for clip in chunk])[:, None]
        # Temporal anomalies start from a normal sound; their own stream keeps the rest fixed.
        kinds = draw_kinds(
            np.random.default_rng([seed, _machine_id(machine), split_id, c, 1]), machine, sev
        )
        spectral = np.array([k is None for k in kinds])[:, None]
        machine_sound = spec.render(rng, t, op, sev * spectral, sr)
        machine_sound = apply_temporal(
            np.random.default_rng([seed, _machine_id(machine), split_id, c, 2]),
            machine_sound,
            sev,
            kinds,
            sr,
        )
        snr_db = _u(rng, 3.0, 15.0, n)  # machine-to-factory-noise ratio
        mix = machine_sound + 10 ** (-snr_db / 20) * _background(rng, n, samples, sr)
        level = 0.05 * 10 ** (_u(rng, -4.0, 4.0, n) / 20)  # the microphone gain varies too
        pcm = np.round(np.clip(_unit(mix) * level, -1, 1) * 32767).astype(np.int16)
        for clip, wave in zip(chunk, pcm, strict=True):
            buffer = io.BytesIO()  # one write per file: much faster than soundfile's own flushes
            sf.write(buffer, wave, sr, subtype="PCM_16", format="WAV")
            (folder / clip.name).write_bytes(buffer.getvalue())
