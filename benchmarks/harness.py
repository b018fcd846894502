"""What every benchmark section shares: the table row, the sizes per mode, timing helpers.

A section is a module of ``benchmarks/`` with ``section(bench) -> list[Row]``; figures a
later section needs (training throughput for the projections, say) are measured once and
kept on the :class:`Bench`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asd.config import Config

REPO = Path(__file__).resolve().parents[1]

BLOCK_BEGIN = "<!-- trial-costs: written by benchmarks/trial_costs.py --latest -->"
BLOCK_END = "<!-- /trial-costs -->"
"""Around the trial-cost report inside ``results/latest.md``: a standalone run writes it there,
and ``run.py`` keeps it when it rewrites the rest of the file."""


def trial_costs_block(text: str) -> str | None:
    """The trial-cost block of a ``latest.md`` (markers included), or None."""
    begin, end = text.find(BLOCK_BEGIN), text.find(BLOCK_END)
    if begin < 0 or end < begin:
        return None
    return text[begin : end + len(BLOCK_END)]


def splice_trial_costs(text: str, report: str) -> str:
    """``text`` with its trial-cost block replaced by ``report`` (appended when it has none)."""
    block = f"{BLOCK_BEGIN}\n{report.strip()}\n{BLOCK_END}"
    old = trial_costs_block(text)
    if old is not None:
        return text.replace(old, block)
    return f"{text.rstrip()}\n\n{block}\n"


# The sizes of a DCASE 2023 Task 2 run the projections are made for.
DCASE_MACHINES = 7
DCASE_TRAIN_CLIPS = 1000  # normal train clips per machine type (990 source + 10 target)
DCASE_EVAL_CLIPS = 1200  # clips a trial embeds per machine type and epoch (train + test)
PAPER_CLIPS_PER_STEP = 48
PAPER_VIEWS = 6
SWEEP_EPOCHS = 24  # search_spaces/default.yaml
SWEEP_TRIALS = 32  # search_spaces/default.yaml
H100_TRAIN_SAMPLES_PER_S = 11_669.0
"""``train()`` epoch 2 on one H100, bf16 + channels_last, eager (issue 12, measured with
``--device cuda`` in November 2026): the GPU rate projections use when no GPU is here."""
H100_COMPILED_SAMPLES_PER_S = 16_472.0
"""Model-only step under ``torch.compile`` on the same H100 (1.39x eager model-only)."""
H100_EMBED_CLIPS_PER_S = 18_051.0
"""Eval-mode embedding forward on the same H100."""


@dataclass
class Row:
    """One figure of the table."""

    section: str
    name: str
    value: float | None
    unit: str = ""
    note: str = ""


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is; ``sizes_for`` picks them per mode and device."""

    mode: str
    n_mels: int = 128
    frames: int = 313  # 10 s at hop 512
    clips_per_step: int = 2  # clips per training step; (1 + views) x this = encoder batch
    warmup: int = 2
    iters: int = 6
    embed_batch: int = 64
    train_steps: int = 6  # steps per epoch of the train() measurement (it runs 2 epochs)
    feature_clips: int = 64
    feature_seconds: float = 10.0
    augment_clips: int = 48
    pitch_seconds: float = 10.0
    scoring_clips: int = 10_000
    elliptic_clips: int = 2_100  # 300 per machine type at scoring_dim
    scoring_dim: int = 128
    mcd_clips: int = DCASE_TRAIN_CLIPS  # per section: the DCASE-size elliptic fit
    mcd_dim: int = 512
    mcd_sections: int = DCASE_MACHINES
    sklearn_mcd_sections: int = 1  # scikit-learn's FastMCD is timed on this many (minutes each)
    compile_clips: int = 8  # clips per epoch of the compiled train() trials
    sweep_trials: int = 3
    scale_base_clips: int = 16
    scale_crop: int = 32
    scale_batch: int = 8
    scale_levels: tuple[int, ...] = (1, 2, 4)
    scale_jobs: int = 4


def sizes_for(mode: str, device: torch.device) -> Sizes:
    """'full' (the default), 'quick' (the smoke run) or 'toy' (unit tests: tiny shapes)."""
    full = Sizes(mode="full")
    if device.type == "cuda":
        full = replace(
            full, clips_per_step=PAPER_CLIPS_PER_STEP, warmup=5, iters=20, train_steps=10
        )
    if mode == "full":
        return full
    if mode == "quick":
        return replace(
            full,
            mode="quick",
            warmup=1,
            iters=3,
            embed_batch=16 if device.type == "cpu" else 64,
            train_steps=3,
            feature_clips=16,
            augment_clips=16,
            pitch_seconds=2.0,
            scoring_clips=1_400,
            elliptic_clips=1_400,
            mcd_clips=400,
            mcd_dim=128,
            sweep_trials=2,
            scale_base_clips=8,
            scale_levels=(1, 2),
            scale_jobs=2,
        )
    if mode == "toy":
        return Sizes(
            mode="toy",
            n_mels=32,
            frames=40,
            clips_per_step=2,
            warmup=0,
            iters=1,
            embed_batch=4,
            train_steps=1,
            feature_clips=2,
            feature_seconds=1.0,
            augment_clips=2,
            pitch_seconds=1.0,
            scoring_clips=280,
            elliptic_clips=280,
            scoring_dim=4,
            mcd_clips=60,
            mcd_dim=4,
            mcd_sections=2,
            compile_clips=4,
            sweep_trials=1,
            scale_base_clips=4,
            scale_crop=16,
            scale_batch=2,
            scale_levels=(1,),
            scale_jobs=1,
        )
    raise ValueError(f"unknown mode {mode!r}")


@dataclass
class Bench:
    """Settings of one benchmark run plus the figures later sections reuse."""

    device: torch.device
    sizes: Sizes
    compile_cpu: bool = False
    gpu_samples_per_s: float | None = None
    measured: dict[str, float] = field(default_factory=dict)
    """Figures later sections reuse (``train_sps``, ``embed_cps``, ``trial_overhead_s``...)."""
    train_run: dict[str, float] | None = None
    """asd.model.train.train's figures from the step section, for the epoch section."""
    notes: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def config(self, **overrides: Any) -> Config:
        """The paper's config at this run's mel size, plus ``overrides`` (dotted keys)."""
        base = {
            "features.n_mels": self.sizes.n_mels,
            "train.crop_frames": self.sizes.frames,
            "train.lr": 1e-3,
            "train.compile": "off",  # eager figures; benchmarks/compiled.py times compiled ones
        }
        return Config().with_overrides({**base, **overrides})

    def once(self, key: str, measure: Callable[[], float]) -> float:
        """A figure measured on first use and kept for the sections after."""
        if key not in self.measured:
            self.measured[key] = float(measure())
        return self.measured[key]


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of ``fn()`` over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(iters, 1)):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_mels(n: int, n_mels: int, frames: int, device: torch.device, seed: int = 0):
    """(n, n_mels, frames) dB values in a log-mel's range: a tilted spectrum plus texture."""
    g = torch.Generator().manual_seed(seed)
    tilt = torch.linspace(-20.0, -70.0, n_mels)[None, :, None]  # (1, M, 1)
    x = tilt + 6.0 * torch.randn(n, n_mels, frames, generator=g)
    return x.clamp(-100.0, 0.0).to(device)


def harmonic_wave(seconds: float, sample_rate: int, f0: float = 220.0, seed: int = 0):
    """A machine-like harmonic tone plus a little noise: (samples,) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = np.zeros_like(t)
    for k in range(1, 16):
        if k * f0 < sample_rate / 2:
            wave += np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
    wave += 0.02 * rng.standard_normal(len(t))
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def encoder_batch(bench: Bench, clips: int | None = None) -> int:
    """Encoder inputs per step: each clip and its views."""
    return (1 + PAPER_VIEWS) * (clips or bench.sizes.clips_per_step)


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for a table note."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def tiny_normalisation(n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of :func:`synthetic_mels`' range, for the encoder's input buffers."""
    return np.full(n_mels, -45.0, np.float32), np.full(n_mels, 15.0, np.float32)
