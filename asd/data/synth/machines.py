"""The synthetic machine types: one physical mechanism per type and how its files are named.

Why it exists: each machine type has its own mechanism (motor harmonics, rail clacks, a
bearing resonance, blade-pass tones, gear mesh sidebands, sliding bursts, valve clicks)
driven by one operating value ``op`` (speed or rate); anomalies are mechanism-specific
(defect impulses, imbalance, rattle, leaks, ...) with a severity per clip. :data:`SPECS`
maps every DCASE 2023 machine name (dev and eval) to its recipe, file-name template and
source/target operating points; :mod:`asd.data.synth.tree` lays out the tree and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asd.data.synth import signals as sig

Array = np.ndarray
Render = Callable[[np.random.Generator, Array, Array, Array, int], Array]
"""(rng, t (samples,), op (n, 1), severity (n, 1), sample_rate) -> machine sound (n, samples)."""


# --------------------------------------------------------------------------- machine recipes
# Each recipe: (rng, t, op, severity, sr) -> (n, samples). The normal sound is built to RMS 1
# and anomalies are added relative to it, so severity is a level, not an absolute loudness.


def _rig_knocks(rng: np.random.Generator, n: int, samples: int, sr: int) -> Array:
    """A test rig that knocks now and then (a clamp, a cable, the belt), RMS 1.

    Normal clips of a steady machine then have a few loud frames, as real ones do, so the
    loudest frame of a band varies more than its mean.
    """
    return sig.unit(
        sig.ring(
            sig.random_events(rng, n, samples, sig.uniform(rng, 0.5, 2.0, n), 1.0, sr),
            sig.uniform(rng, 1500, 6000, n),
            sig.uniform(rng, 0.002, 0.01, n),
            sr,
        )
    )


def _toycar(rng, t, op, sev, sr):
    """Toy car: DC-motor harmonics, gear whine, road rumble.

    Anomalies are steady (a rough band, a whine off its order, a wobble at wheel rate): they
    move the clip mean and spread, not one frame.
    """
    n, samples = sev.shape[0], t.size
    f0 = 110.0 * op * sig.uniform(rng, 0.97, 1.03, n)
    phase = sig.phase(t, f0, sig.uniform(rng, 0.002, 0.01, n), sig.uniform(rng, 0.3, 2.0, n), rng)
    amps = (1.0 / np.arange(1, 9)) * rng.uniform(0.6, 1.4, (n, 8))
    motor = sig.harmonics(rng, phase, amps)
    whine = sig.harmonics(rng, 7.0 * phase, sig.uniform(rng, 0.1, 0.3, n))
    rumble = sig.shaped_noise(
        rng, n, samples, sr, lambda f: 1.0 / (1.0 + (f[None, :] / 250.0) ** 2)
    )
    rig = sig.uniform(rng, 0.1, 0.3, n) * _rig_knocks(rng, n, samples, sr)
    normal = sig.unit(
        sig.unit(motor) + 0.3 * sig.unit(whine) + sig.uniform(rng, 0.3, 0.8, n) * rumble + rig
    )
    rough, bad_whine, wobble = sig.split_kinds(rng, sev, 3)
    wheel = f0 / 12.0
    # A dry axle: a steady rough band over the whole clip (the mean sees it, no frame stands out).
    roughness = sig.shaped_noise(
        rng,
        n,
        samples,
        sr,
        sig.band(sig.uniform(rng, 2500, 4000, n), sig.uniform(rng, 400, 800, n)),
    )
    extra = sig.harmonics(rng, 7.5 * phase, np.ones((n, 1)))  # a chipped gear: whine off its order
    am = 1.0 + 1.2 * wobble * np.sin(2 * np.pi * wheel * t[None, :])
    return normal * am + 0.6 * rough * roughness + 0.9 * bad_whine * sig.unit(extra)


def _toytrain(rng, t, op, sev, sr):
    """Toy train: rail-joint double clacks, motor hum, rolling noise.

    Anomalies are short: a wheel bumping over a defect, a scrape, a slipping motor, each
    50-300 ms once or twice a clip.
    """
    n, samples = sev.shape[0], t.size
    f0 = 85.0 * op * sig.uniform(rng, 0.97, 1.03, n)
    motor = sig.harmonics(
        rng,
        sig.phase(t, f0, sig.uniform(rng, 0.002, 0.01, n), sig.uniform(rng, 0.3, 2.0, n), rng),
        (1.0 / np.arange(1, 7) ** 1.5) * rng.uniform(0.6, 1.4, (n, 6)),
    )
    joint = 0.3 / op * sig.uniform(rng, 0.95, 1.05, n)
    imp = sig.impulse_train(rng, samples, sr, joint, 1.0, jitter=0.01)
    lag = int(0.05 * sr)
    imp = imp + 0.7 * np.roll(imp, lag, axis=-1)  # the second bogie crosses the same joint
    clacks = sig.ring(imp, sig.uniform(rng, 1500, 2200, n), sig.uniform(rng, 0.005, 0.012, n), sr)
    rolling = sig.shaped_noise(
        rng, n, samples, sr, sig.band(sig.uniform(rng, 600, 900, n), sig.uniform(rng, 300, 500, n))
    )
    normal = sig.unit(
        sig.unit(motor) + sig.unit(clacks) * sig.uniform(rng, 0.8, 1.2, n) + 0.4 * rolling
    )
    normal = sig.colour(rng, normal, sr, 1.5)
    bump, scrape, slip = sig.split_kinds(rng, sev, 3)
    bad = sig.windows(*sig.rare_events(rng, sev, samples / sr, 0.05, 0.3), samples, sr)
    bumps = sig.ring(
        sig.random_events(rng, n, samples, sig.uniform(rng, 20, 50, n), 1.0, sr) * (bad > 0.5),
        sig.uniform(rng, 3000, 4500, n),
        sig.uniform(rng, 0.002, 0.004, n),
        sr,
    )
    scraping = (
        sig.shaped_noise(rng, n, samples, sr, sig.band(sig.uniform(rng, 4000, 5500, n), 600.0))
        * bad
    )
    slipping = (
        sig.harmonics(rng, sig.phase(t, 1.35 * f0, 0.01, 1.0, rng), np.ones((n, 2)) * [1.0, 0.5])
        * bad
    )
    return (
        normal
        + sig.level(bump, -16.0, 0.0) * sig.local_unit(bumps, bad)
        + sig.level(scrape, -20.0, -4.0) * sig.local_unit(scraping, bad)
        + sig.level(slip, -12.0, 4.0) * sig.local_unit(slipping, bad)
    )


def _bearing(rng, t, op, sev, sr):
    """Bearing: a structural resonance amplitude-modulated at shaft rate.

    Anomalies are steady: defect impulse trains (faster than a log-mel frame) or a spread
    resonance; they move the clip mean, not one frame.
    """
    n, samples = sev.shape[0], t.size
    shaft = 25.0 * op * sig.uniform(rng, 0.98, 1.02, n)
    res_f = sig.uniform(rng, 3000, 3400, n)
    res = sig.shaped_noise(rng, n, samples, sr, sig.band(res_f, sig.uniform(rng, 150, 300, n)))
    am = 1.0 + sig.uniform(rng, 0.2, 0.4, n) * np.sin(
        2 * np.pi * shaft * t[None, :] + sig.uniform(rng, 0, 6.3, n)
    )
    low = sig.harmonics(rng, sig.phase(t, shaft, 0.003, 0.5, rng), rng.uniform(0.3, 1.0, (n, 3)))
    broad = sig.shaped_noise(rng, n, samples, sr, lambda f: 1.0 / (1.0 + f[None, :] / 500.0))
    rig = sig.uniform(rng, 0.1, 0.3, n) * _rig_knocks(rng, n, samples, sr)
    normal = sig.unit(sig.unit(res * am) + 0.5 * sig.unit(low) + 0.4 * broad + rig)
    outer, inner, loose = sig.split_kinds(rng, sev, 3)
    bpfo = sig.ring(
        sig.impulse_train(rng, samples, sr, 1.0 / (3.58 * shaft), 1.0, jitter=0.01),
        sig.uniform(rng, 4200, 5200, n),
        sig.uniform(rng, 0.001, 0.002, n),
        sr,
    )
    bpfi = sig.ring(
        sig.impulse_train(rng, samples, sr, 1.0 / (5.42 * shaft), 1.0, jitter=0.01),
        res_f,
        sig.uniform(rng, 0.001, 0.002, n),
        sr,
    ) * (1.0 + np.sin(2 * np.pi * shaft * t[None, :]))  # inner race: modulated by the load zone
    # A loose or dry mounting: the resonance spreads upwards, steadily (mean, not max).
    spread = sig.shaped_noise(
        rng, n, samples, sr, sig.band(res_f * sig.uniform(rng, 1.08, 1.2, n), 400.0)
    )
    return (
        normal
        + 0.7 * outer * sig.unit(bpfo)
        + 0.7 * inner * sig.unit(bpfi)
        + 0.6 * loose * sig.unit(spread * am)
    )


def _fan(rng, t, op, sev, sr):
    """Fan: broadband airflow plus blade-pass harmonics; imbalance wobble, rubbing bursts."""
    n, samples = sev.shape[0], t.size
    shaft = 22.0 * op * sig.uniform(rng, 0.98, 1.02, n)
    blades = 7.0
    phase = sig.phase(
        t, shaft, sig.uniform(rng, 0.002, 0.008, n), sig.uniform(rng, 0.2, 1.0, n), rng
    )
    bpf = sig.harmonics(rng, blades * phase, (0.6 ** np.arange(4)) * rng.uniform(0.7, 1.3, (n, 4)))
    hump = sig.uniform(rng, 500, 800, n) * op

    def air(f: Array) -> Array:
        return 1.0 / (1.0 + (f[None, :] / hump) ** 2) + 0.1 / (1.0 + f[None, :] / 4000.0)

    airflow = sig.shaped_noise(rng, n, samples, sr, air)
    normal = sig.unit(sig.unit(airflow) + sig.uniform(rng, 0.4, 0.7, n) * sig.unit(bpf))
    imbalance, rubbing = sig.split_kinds(rng, sev, 2)
    wobble = 1.0 + 0.8 * imbalance * np.sin(phase)
    one_x = sig.harmonics(rng, phase, np.ones((n, 2)) * [1.0, 0.4])
    rub = sig.shaped_noise(rng, n, samples, sr, sig.band(sig.uniform(rng, 2500, 4000, n), 800.0))
    rub = rub * sig.gate(t, 1.0 / shaft, sig.uniform(rng, 0, 0.05, n), 0.25 / shaft, 0.002)
    return normal * wobble + 0.8 * imbalance * sig.unit(one_x) + 0.8 * rubbing * sig.unit(rub)


def _gearbox(rng, t, op, sev, sr):
    """Gearbox: mesh frequency with shaft-rate sidebands; broken tooth, wear."""
    n, samples = sev.shape[0], t.size
    shaft = 14.0 * op * sig.uniform(rng, 0.98, 1.02, n)
    teeth = 23.0
    shaft_phase = sig.phase(
        t, shaft, sig.uniform(rng, 0.001, 0.005, n), sig.uniform(rng, 0.2, 1.0, n), rng
    )
    mesh = teeth * shaft_phase
    side = 1.0 + sig.uniform(rng, 0.05, 0.15, n) * np.sin(shaft_phase)  # mild eccentricity
    tones = sig.harmonics(rng, mesh, (0.5 ** np.arange(3)) * rng.uniform(0.7, 1.3, (n, 3))) * side
    oil = sig.shaped_noise(rng, n, samples, sr, lambda f: 1.0 / (1.0 + (f[None, :] / 1500.0) ** 2))
    normal = sig.unit(sig.unit(tones) + sig.uniform(rng, 0.3, 0.6, n) * oil)
    broken, wear = sig.split_kinds(rng, sev, 2)
    knocks = sig.ring(
        sig.impulse_train(rng, samples, sr, 1.0 / shaft, 1.0, jitter=0.005),
        sig.uniform(rng, 2000, 3000, n),
        sig.uniform(rng, 0.002, 0.006, n),
        sr,
    )
    worn = sig.harmonics(rng, mesh, np.ones((n, 3)) * [0.0, 1.0, 0.8]) * (
        1.0 + np.sin(2 * shaft_phase)
    )
    return normal + 0.8 * broken * sig.unit(knocks) + 0.6 * wear * sig.unit(worn)


def _slider(rng, t, op, sev, sr):
    """Slide rail: periodic sliding bursts ending in end-stop clicks.

    Anomalies are short: a knock at a rail defect, a friction squeak, or a jolt against the
    end stop, each 50-300 ms once or twice a clip (a clip mean barely moves).
    """
    n, samples = sev.shape[0], t.size
    seconds = samples / sr
    stroke = 0.5 / op * sig.uniform(rng, 0.96, 1.04, n)
    offset = sig.uniform(rng, 0, 0.5, n)
    on = sig.uniform(rng, 0.45, 0.75, n) * stroke
    env = sig.gate(t, stroke, offset, on, 0.03)
    slide = sig.shaped_noise(
        rng, n, samples, sr, sig.band(sig.uniform(rng, 1200, 1600, n) * op**0.5, 700.0)
    )
    events = int(t[-1] / float(stroke.min())) + 2
    stop_times = (offset + on + np.arange(events)[None, :] * stroke) * sr
    heights = 10 ** (rng.normal(0, 2.0, (n, events)) / 20)
    stops = sig.ring(
        sig.place(stop_times, heights, samples),
        sig.uniform(rng, 900, 1400, n),
        sig.uniform(rng, 0.004, 0.01, n),
        sr,
    )
    hum = sig.harmonics(
        rng, 2 * np.pi * 100.0 * t[None, :] * np.ones((n, 1)), rng.uniform(0, 1, (n, 3))
    )
    normal = sig.unit(
        sig.uniform(rng, 0.7, 1.3, n) * sig.unit(slide * env)
        + 0.6 * sig.unit(stops)
        + 0.2 * sig.unit(hum)
    )
    normal = sig.colour(rng, normal, sr, 1.5)
    knock, squeak, jolt = sig.split_kinds(rng, sev, 3)
    bad = sig.windows(*sig.rare_events(rng, sev, seconds, 0.05, 0.3), samples, sr)
    knocks = sig.ring(
        sig.random_events(rng, n, samples, sig.uniform(rng, 30, 60, n), 1.0, sr) * (bad > 0.5),
        sig.uniform(rng, 3500, 5000, n),
        0.002,
        sr,
    )
    squeaks = (
        sig.harmonics(
            rng, sig.phase(t, sig.uniform(rng, 2200, 3200, n), 0.01, 5.0, rng), np.ones((n, 1))
        )
        * bad
    )
    onsets = (np.diff((bad > 0.5) * 1.0, axis=-1, prepend=0.0) > 0) * 1.0
    jolts = sig.ring(onsets, sig.uniform(rng, 200, 500, n), 0.04, sr)
    return (
        normal
        + sig.level(knock, -12.0, 4.0) * sig.local_unit(knocks, bad)
        + sig.level(squeak, -16.0, 0.0) * sig.local_unit(squeaks, bad)
        + sig.level(jolt, -10.0, 6.0) * sig.local_unit(jolts, bad)
    )


def _valve(rng, t, op, sev, sr):
    """Solenoid valve: open/close clicks at irregular strokes, flow hiss while open.

    Anomalies are short (as on real valves, where a clip mean is at chance): a chattering
    burst at a resonance the valve lacks, a spurt of leak hiss, or a hard slam of the plunger,
    each 50-300 ms once or twice a clip.
    """
    n, samples = sev.shape[0], t.size
    seconds = samples / sr
    cycle = 0.4 / op * sig.uniform(rng, 0.7, 1.4, n)  # the pattern varies clip to clip
    starts = sig.strokes(rng, n, seconds, cycle, 0.4)
    events = starts.shape[1]
    open_s = cycle * sig.uniform(rng, 0.2, 0.7, n) * rng.uniform(0.8, 1.2, (n, events))

    def clicks(times: Array, freq: Array, decay: float) -> Array:
        heights = 10 ** (rng.normal(0, 2.0, (n, events)) / 20)  # each stroke a little different
        return sig.ring(sig.place(times * sr, heights, samples), freq, decay, sr)

    clicks_open = clicks(starts, sig.uniform(rng, 2600, 3000, n) * op**0.5, 0.004)
    clicks_close = clicks(starts + open_s, sig.uniform(rng, 1700, 2100, n) * op**0.5, 0.006)
    env = sig.windows(starts, open_s, samples, sr, 0.01)
    hiss = sig.shaped_noise(
        rng, n, samples, sr, lambda f: (f[None, :] / 4000.0) / (1 + (f[None, :] / 4000.0) ** 2)
    )
    pump = sig.harmonics(
        rng, 2 * np.pi * 50.0 * t[None, :] * np.ones((n, 1)), rng.uniform(0, 1, (n, 3))
    )
    normal = sig.unit(
        sig.unit(clicks_open)
        + 0.8 * sig.unit(clicks_close)
        + sig.uniform(rng, 0.3, 0.8, n) * sig.unit(hiss * env)
        + 0.2 * sig.unit(pump)
    )
    normal = sig.colour(rng, normal, sr, 1.5)
    chatter, spurt, slam = sig.split_kinds(rng, sev, 3)
    on = sig.windows(*sig.rare_events(rng, sev, seconds, 0.05, 0.3), samples, sr)
    chattering = sig.ring(
        sig.random_events(rng, n, samples, sig.uniform(rng, 40, 80, n), 1.0, sr) * (on > 0.5),
        sig.uniform(rng, 3800, 6000, n),
        0.003,
        sr,
    )
    spurting = (
        sig.shaped_noise(rng, n, samples, sr, sig.band(sig.uniform(rng, 5000, 7000, n), 700.0)) * on
    )
    onsets = (np.diff((on > 0.5) * 1.0, axis=-1, prepend=0.0) > 0) * 1.0
    thud = sig.ring(onsets, sig.uniform(rng, 300, 700, n), 0.03, sr)
    snap = sig.shaped_noise(rng, n, samples, sr, lambda f: np.ones((1, f.size)))
    slamming = sig.unit(thud) + 0.3 * snap * on
    return (
        normal
        + sig.level(chatter, -12.0, 4.0) * sig.local_unit(chattering, on)
        + sig.level(spurt, -14.0, 2.0) * sig.local_unit(spurting, on)
        + sig.level(slam, -12.0, 4.0) * sig.local_unit(slamming, on)
    )


@dataclass(frozen=True)
class MachineSpec:
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


SPECS: dict[str, MachineSpec] = {
    "ToyCar": MachineSpec(
        _toycar, "car_A1_spd_{v}_mic_1", (("28V", 1.0), ("31V", 1.1)), (("37V", 1.3),)
    ),
    "ToyTrain": MachineSpec(
        _toytrain, "car_E1_spd_{v}_mic_1", (("6", 1.0), ("7", 1.15)), (("9", 1.4),)
    ),
    "bearing": MachineSpec(_bearing, "vel_{v}_loc_A", (("6", 1.0), ("8", 1.15)), (("12", 1.35),)),
    "fan": MachineSpec(_fan, "m-n_W_spd_{v}", (("1.0", 1.0), ("1.1", 1.1)), (("1.3", 1.3),)),
    "gearbox": MachineSpec(
        _gearbox, "volt_{v}_wt_30", (("1.0", 1.0), ("1.3", 1.12)), (("2.0", 1.35),)
    ),
    "slider": MachineSpec(
        _slider, "vel_{v}_ac_0.03", (("300", 1.0), ("400", 1.15)), (("600", 1.4),)
    ),
    "valve": MachineSpec(_valve, "pat_{v}_panel_open", (("00", 1.0), ("01", 1.1)), (("03", 1.3),)),
    "ToyDrone": MachineSpec(_fan, "mode_{v}_noise_1", (("A", 1.0), ("B", 1.1)), (("C", 1.3),), 3.0),
    "ToyNscale": MachineSpec(
        _toytrain, "train_B_spd_{v}", (("5", 1.0), ("6", 1.1)), (("8", 1.35),), 0.8
    ),
    "ToyTank": MachineSpec(
        _toycar, "spd_{v}_mic_2", (("20V", 1.0), ("22V", 1.1)), (("26V", 1.3),), 0.7
    ),
    "Vacuum": MachineSpec(_fan, "noAttribute", (("", 1.0),), (("", 1.3),), 1.8),
    "bandsaw": MachineSpec(_gearbox, "vel_{v}", (("1", 1.0), ("2", 1.12)), (("4", 1.35),), 1.5),
    "grinder": MachineSpec(
        _bearing, "grindstone_1_speed_{v}", (("3", 1.0), ("4", 1.1)), (("6", 1.3),), 1.6
    ),
    "shaker": MachineSpec(_slider, "speed_{v}", (("50", 1.0), ("60", 1.12)), (("80", 1.4),), 0.8),
}
