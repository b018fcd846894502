"""A synthetic DCASE 2023 Task 2 tree: the real layout and names, sounds from simple physics.

Why it exists: tests, CI and the README demo need data that behaves like the real thing
(seven machine types with their own spectra, a source/target domain shift, few target clips,
anomalies from subtle to obvious, factory noise) without a 100 GB download.

Every machine type has its own mechanism (motor harmonics, rail clacks, a bearing resonance,
blade-pass tones, gear mesh sidebands, sliding bursts, valve clicks) driven by one operating
value ``op`` (speed or rate). The target domain shifts ``op``; each clip varies its own
parameters a little; anomalies are mechanism-specific with a severity drawn per clip, and of
two characters, as on real machines: on valve, slider and ToyTrain they are short events
(50-300 ms) that a clip-mean spectrum cannot see but the loudest frame per mel band can; on
the steady machines (ToyCar, bearing, fan, gearbox) they are steady spectral changes the
mean sees better than the maximum. So which temporal pooling a detector uses matters, both
ways (``benchmarks/synth_pooling.py`` prints it per machine type).
Everything is vectorised over a chunk of clips and seeded: the same seed writes
byte-identical files.

Modules: this one lays out the tree, names, seeds and writes the files;
:mod:`asd.data.synth.machines` holds the per-machine mechanisms and their naming specs,
:mod:`asd.data.synth.signals` the signal building blocks and factory background they share, and
:mod:`asd.data.synth.temporal` the temporal anomalies applied after rendering.
"""

from __future__ import annotations

import io
import json
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from asd.data.index import DEV_MACHINES, EVAL_MACHINES
from asd.data.synth import signals as sig
from asd.data.synth.machines import SPECS, MachineSpec
from asd.data.synth.temporal import apply as apply_temporal
from asd.data.synth.temporal import draw_kinds
from asd.errors import AsdError

__all__ = ["DEV_MACHINES", "EVAL_MACHINES", "record", "synthesize"]

_CHUNK = 32
"""Clips rendered together: bounds memory for long clips and keeps seeding independent of n."""


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
    overwrite: bool = False,
) -> Path:
    """Write a synthetic DCASE 2023 Task 2 tree under ``out`` and return ``out``.

    ``<out>/dev_data/raw/<machine>/train`` holds ``train_source`` + ``train_target`` normal
    clips, ``test`` holds ``test_per_domain`` normal and as many anomalous clips per domain,
    all with dev-style names. ``eval_machines`` go to ``<out>/eval_data/raw`` with unlabeled
    test names and headerless ground-truth CSVs in ``<out>/ground_truth`` (labels) and
    ``<out>/ground_truth/domain`` (0 source / 1 target). Same arguments, same bytes.

    The arguments are recorded in ``<out>/synth.json``: writing over a tree of other
    settings (or one without that record) would mix two data sets, so it is refused unless
    ``overwrite``, which removes the old tree first.
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
    settings = {
        "machines": list(machines), "eval_machines": list(eval_machines),
        "train_source": train_source, "train_target": train_target,
        "test_per_domain": test_per_domain, "seconds": seconds,
        "sample_rate": sample_rate, "seed": seed,
    }  # fmt: skip
    _claim(out, settings, overwrite)
    samples = int(round(seconds * sample_rate))
    for subset, group in (("dev_data", machines), ("eval_data", eval_machines)):
        for machine in group:
            rng = np.random.default_rng([seed, _machine_id(machine)])
            spec = SPECS[machine]
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


MANIFEST = "synth.json"
"""The settings a synthetic tree was written with, at its top."""

_TREE = ("dev_data", "eval_data", "ground_truth", MANIFEST)
"""What :func:`synthesize` writes under ``out`` (and ``overwrite`` removes)."""


def _claim(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Record ``settings`` in ``out``; AsdError if it holds a tree of other settings."""
    if out.exists() and not out.is_dir():
        raise AsdError(f"--out {out} is a file, not a folder")
    present = [name for name in _TREE if (out / name).exists()]
    if present and not overwrite:
        try:
            saved = json.loads((out / MANIFEST).read_text())
        except (OSError, ValueError):
            saved = None
        if saved != settings:
            what = "other settings" if saved is not None else f"no {MANIFEST} record"
            differ = (
                f" ({', '.join(k for k in settings if saved.get(k) != settings[k])} differ)"
                if isinstance(saved, dict)
                else ""
            )
            raise AsdError(
                f"{out} already holds a synthetic tree with {what}{differ}: pass --overwrite "
                "to replace it, or choose another --out"
            )
    if overwrite:
        for name in present:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(settings, indent=1) + "\n")


def _machine_id(machine: str) -> int:
    """A stable number per machine name: seeds do not depend on which machines are asked for."""
    return zlib.crc32(machine.encode())


def _plan(
    rng: np.random.Generator, spec: MachineSpec, domain: str, split: str, label: str, count: int
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
    spec: MachineSpec,
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
        pcm = np.round(np.clip(record(rng, machine_sound, sr), -1, 1) * 32767).astype(np.int16)
        for clip, wave in zip(chunk, pcm, strict=True):
            buffer = io.BytesIO()  # one write per file: much faster than soundfile's own flushes
            sf.write(buffer, wave, sr, subtype="PCM_16", format="WAV")
            (folder / clip.name).write_bytes(buffer.getvalue())


def record(rng: np.random.Generator, machine_sound: np.ndarray, sr: int) -> np.ndarray:
    """What the microphone hears: the machine at 3-15 dB over factory noise, gain +-4 dB."""
    n, samples = machine_sound.shape
    snr_db = sig.uniform(rng, 3.0, 15.0, n)  # machine-to-factory-noise ratio
    mix = machine_sound + 10 ** (-snr_db / 20) * sig.background(rng, n, samples, sr)
    level = 0.05 * 10 ** (sig.uniform(rng, -4.0, 4.0, n) / 20)  # the microphone gain varies too
    return sig.unit(mix) * level
