"""Benchmarks of the asd training pipeline: one table with every figure and the machine.

    python benchmarks/run.py                      # full run on this machine (< 10 min, 2-core CPU)
    python benchmarks/run.py --quick              # small sizes (< 2 min on a 2-core CPU)
    python benchmarks/run.py --device cuda        # on a GPU machine
    python benchmarks/run.py --sections model,step --out /tmp/bench

Each section is one function ``section_<name>(bench) -> list[Row]``; figures a later section
needs (the training throughput for the epoch projection, say) are measured once and kept on
the :class:`Bench`. Sections 1-6 and 8 import only torch/numpy/pandas/scikit-learn/soundfile
and the asd core; ``sweep`` needs Ray, Optuna and MLflow and is skipped with a note without
them. Timings are medians of timed iterations after warm-up, with ``torch.cuda.synchronize``
around each one on CUDA. See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asd.config import Config

REPO = Path(__file__).resolve().parents[1]

# The sizes of a DCASE 2023 Task 2 run the projections are made for.
DCASE_MACHINES = 7
DCASE_TRAIN_CLIPS = 1000  # normal train clips per machine type (990 source + 10 target)
DCASE_EVAL_CLIPS = 1200  # clips a trial embeds per machine type and epoch (train + test)
PAPER_CLIPS_PER_STEP = 48
PAPER_VIEWS = 6
SWEEP_EPOCHS = 24  # search_spaces/default.yaml
SWEEP_TRIALS = 32  # search_spaces/default.yaml
ASSUMED_GPU_SAMPLES_PER_S = 4000.0
"""ResNet-18 fwd+bwd on 128x313 in bf16 on one H100 (a guess; replace with a measured one)."""


# --------------------------------------------------------------------------- results


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
    elliptic_clips: int = 2_100  # 300 per machine type: FastMCD above 500 takes minutes here
    scoring_dim: int = 128
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
    train_run: dict[str, float] | None = None
    """asd.train.train's figures from the step section, for the epoch section."""
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
        }
        return Config().with_overrides({**base, **overrides})

    def once(self, key: str, measure: Callable[[], float]) -> float:
        """A figure measured on first use and kept for the sections after."""
        if key not in self.measured:
            self.measured[key] = float(measure())
        return self.measured[key]


# --------------------------------------------------------------------------- timing helpers


def sync(device: torch.device) -> None:
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


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``amp`` (what train() does), else nothing."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    return (1 + PAPER_VIEWS) * (clips or bench.sizes.clips_per_step)


# --------------------------------------------------------------------------- 1. model only


def model_step(
    bench: Bench,
    device: torch.device,
    samples: int,
    amp: bool,
    channels_last: bool,
    compiled: bool,
) -> Callable[[], None]:
    """Encoder forward+backward+Adam on a fixed synthetic batch (samples, n_mels, frames)."""
    from asd.encoder import Encoder

    cfg = bench.config()
    torch.manual_seed(0)
    encoder = Encoder(cfg.encoder, cfg.features.n_mels).to(device)
    if channels_last:
        encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model = torch.compile(encoder) if compiled else encoder
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-4)
    x = synthetic_mels(samples, bench.sizes.n_mels, bench.sizes.frames, device)

    def step() -> None:
        with autocast(device, amp):
            z = model(x)  # (samples, D)
        loss = z.float().square().mean()  # a trivial loss: this measures the model alone
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure_model(
    bench: Bench,
    device: torch.device,
    samples: int,
    amp: bool,
    channels_last: bool,
    compiled: bool,
) -> tuple[float, float | None]:
    """(samples/s, compile seconds or None) of the model-only step."""
    step = model_step(bench, device, samples, amp, channels_last, compiled)
    compile_s = None
    if compiled:
        start = time.perf_counter()
        step()  # traces and compiles forward and backward
        sync(device)
        compile_s = time.perf_counter() - start
    s = bench.sizes
    seconds = timed(step, device, s.warmup, s.iters)
    return samples / seconds, compile_s


def measure_embed(bench: Bench, device: torch.device) -> float:
    """Clips/s of eval-mode forward passes (what embed_clips does every validation epoch)."""
    from asd.encoder import Encoder

    cfg = bench.config()
    encoder = Encoder(cfg.encoder, cfg.features.n_mels).to(device).eval()
    n = bench.sizes.embed_batch
    x = synthetic_mels(n, bench.sizes.n_mels, bench.sizes.frames, device)

    def forward() -> None:
        with torch.no_grad(), autocast(device, True):
            encoder.embed(x)

    s = bench.sizes
    return n / timed(forward, device, max(1, s.warmup // 2), max(2, s.iters // 2))


def model_sps(bench: Bench) -> float:
    """Model-only samples/s on the run's device with train()'s settings (the ratio's floor)."""
    n = encoder_batch(bench)
    return bench.once(
        "model_sps", lambda: measure_model(bench, bench.device, n, bench.cuda, bench.cuda, False)[0]
    )


def section_model(bench: Bench) -> list[Row]:
    """1. Encoder forward+backward+Adam alone: the floor a training step cannot beat."""
    s = bench.sizes
    rows = []
    cpu = torch.device("cpu")
    cpu_samples = encoder_batch(bench, 2 if s.mode != "toy" else s.clips_per_step)
    note = (
        f"{cpu_samples} samples/step ({cpu_samples // 7} clips x 7), fp32, "
        f"{torch.get_num_threads()} threads; paper batch is 336 (48 x 7): per-sample cost on "
        "CPU is ~flat in batch size"
    )
    if not bench.cuda:
        sps = bench.measured["cpu_model_sps"] = model_sps(bench)
    else:
        cpu_bench = replace(bench, sizes=replace(s, warmup=1, iters=3))
        sps = measure_model(cpu_bench, cpu, cpu_samples, False, False, False)[0]
        bench.measured["cpu_model_sps"] = sps
    rows.append(Row("model", "cpu fp32 eager", sps, "samples/s", note))
    if bench.compile_cpu and not bench.cuda:
        csps, compile_s = measure_model(bench, cpu, cpu_samples, False, False, True)
        rows.append(
            Row(
                "model",
                "cpu fp32 torch.compile",
                csps,
                "samples/s",
                f"compile time {compile_s:.0f} s excluded",
            )
        )
    if bench.cuda:
        dev, n = bench.device, encoder_batch(bench)
        fp32, _ = measure_model(bench, dev, n, False, False, False)
        rows.append(Row("model", "cuda fp32 eager", fp32, "samples/s", f"{n} samples/step"))
        eager = model_sps(bench)
        rows.append(
            Row(
                "model",
                "cuda bf16+channels_last eager",
                eager,
                "samples/s",
                f"{n} samples/step (48 clips x 7): train()'s settings",
            )
        )
        try:
            comp, compile_s = measure_model(bench, dev, n, True, True, True)
            bench.measured["model_compiled_sps"] = comp
            rows.append(
                Row(
                    "model",
                    "cuda bf16+channels_last torch.compile",
                    comp,
                    "samples/s",
                    f"compile time {compile_s:.0f} s excluded; {comp / eager:.2f}x eager",
                )
            )
        except Exception as exc:  # compile needs a working toolchain (triton)
            rows.append(Row("model", "cuda torch.compile", None, "", f"failed: {_one_line(exc)}"))
    embed = bench.once("embed_cps", lambda: measure_embed(bench, bench.device))
    rows.append(
        Row(
            "model",
            f"{bench.device.type} embed forward (eval, no grad)",
            embed,
            "clips/s",
            f"batch {s.embed_batch}{', bf16' if bench.cuda else ''}: the per-epoch validation pass",
        )
    )
    return rows


# --------------------------------------------------------------------------- 2. training step


def train_step(bench: Bench, n_clips: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(make_batch, step) exactly as train() does them, on features resident on the device."""
    from asd.augment import make_views
    from asd.contrastive import nt_xent
    from asd.encoder import Encoder
    from asd.train import random_crops

    cfg, device, batch = bench.config(), bench.device, bench.sizes.clips_per_step
    on_cuda = device.type == "cuda"
    clips = synthetic_mels(n_clips, bench.sizes.n_mels, bench.sizes.frames, device)
    valid = torch.full((n_clips,), bench.sizes.frames, device=device)
    torch.manual_seed(0)
    encoder = Encoder(cfg.encoder, cfg.features.n_mels).to(device)
    if on_cuda and cfg.train.channels_last:
        encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-4)
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    order = torch.randperm(n_clips, generator=generator, device=device)
    n_steps = max(1, n_clips // batch)
    state = {"step": 0}

    def make_batch() -> torch.Tensor:
        i = state["step"] % n_steps
        state["step"] += 1
        positions = order[i * batch : (i + 1) * batch]  # (B,)
        x = random_crops(clips, valid, positions, cfg.train.crop_frames, generator).float()
        views = make_views(x, cfg.augment, cfg.features, generator)  # (B, n_views, M, T)
        return torch.cat([x[:, None], views], dim=1)  # (B, V, M, T)

    def step() -> None:
        x = make_batch()
        with autocast(device, cfg.train.amp):
            z = encoder(x.flatten(0, 1))  # (B*V, D)
        loss = nt_xent(z.view(x.shape[0], x.shape[1], -1), cfg.loss.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return make_batch, step


def measure_train(bench: Bench) -> dict[str, float]:
    """asd.train.train itself: 2 epochs of ``train_steps`` steps; per-epoch samples/s."""
    from asd.train import train

    s = bench.sizes
    n = s.train_steps * s.clips_per_step
    cfg = bench.config(**{"train.epochs": 2, "train.batch_size": s.clips_per_step})
    clips = synthetic_mels(n, s.n_mels, s.frames, torch.device("cpu")).numpy()
    lengths = np.full(n, s.frames)
    mean, std = np.full(s.n_mels, -45.0, np.float32), np.full(s.n_mels, 15.0, np.float32)
    result = train(cfg, clips, lengths, mean, std, device=bench.device, progress=False)
    first, last = result.history[0], result.history[-1]
    return {
        "clips": n,
        "epoch1_sps": first["samples_per_s"],
        "epoch2_sps": last["samples_per_s"],
        "epoch2_s": last["seconds"],
    }


def section_step(bench: Bench) -> list[Row]:
    """2. The real step (crops -> views -> encoder -> NT-Xent -> Adam) and train() itself."""
    s = bench.sizes
    n = encoder_batch(bench)
    make_batch, step = train_step(bench, n_clips=8 * s.clips_per_step)
    data_s = timed(make_batch, bench.device, s.warmup, s.iters)
    step_s = timed(step, bench.device, s.warmup, s.iters)
    full = bench.measured["step_sps"] = n / step_s
    model = model_sps(bench)
    where = "bf16+channels_last" if bench.cuda else "fp32"
    rows = [
        Row(
            "step",
            "crops + make_views per step",
            1000 * data_s,
            "ms",
            f"{s.clips_per_step} clips -> {n} samples; {100 * data_s / step_s:.0f}% of the step",
        ),
        Row(
            "step",
            "full step (manual, as train() does it)",
            full,
            "samples/s",
            f"{n} samples/step, {where}",
        ),
        Row(
            "step",
            "full / model-only",
            full / model,
            "ratio",
            "target >= 0.9 on GPU" + ("" if bench.cuda else "; views are CPU work here too"),
        ),
    ]
    t = bench.train_run = measure_train(bench)
    bench.measured["train_sps"] = t["epoch2_sps"]
    rows += [
        Row(
            "step",
            "asd.train.train epoch 1",
            t["epoch1_sps"],
            "samples/s",
            f"{int(t['clips'])} clips, {s.train_steps} steps; includes warm-up",
        ),
        Row(
            "step",
            "asd.train.train epoch 2",
            t["epoch2_sps"],
            "samples/s",
            f"steady state; {t['epoch2_sps'] / model:.2f} of model-only",
        ),
    ]
    return rows


# --------------------------------------------------------------------------- 3. epoch


def section_epoch(bench: Bench) -> list[Row]:
    """3. One DCASE epoch: 7,000 clips x (1 + 6) views, plus the validation embedding pass."""
    if "step_sps" not in bench.measured or "train_sps" not in bench.measured:
        section_step(bench)
    embed = bench.once("embed_cps", lambda: measure_embed(bench, bench.device))
    samples = DCASE_MACHINES * DCASE_TRAIN_CLIPS * (1 + PAPER_VIEWS)
    eval_clips = DCASE_MACHINES * DCASE_EVAL_CLIPS
    rows = []
    for key, label in (("step_sps", "manual step"), ("train_sps", "train() epoch 2")):
        sps = bench.measured[key]
        rows.append(
            Row(
                "epoch",
                f"train epoch at {label} rate",
                samples / sps / 60,
                "min",
                f"{samples:,} samples / {sps:.0f} samples/s",
            )
        )
    rows.append(
        Row(
            "epoch",
            "validation embedding per epoch",
            eval_clips / embed / 60,
            "min",
            f"{eval_clips:,} clips / {embed:.0f} clips/s",
        )
    )
    t = bench.train_run
    if t is not None:
        scale = DCASE_MACHINES * DCASE_TRAIN_CLIPS / t["clips"]
        rows.append(
            Row(
                "epoch",
                f"measured train() epoch of {int(t['clips'])} clips",
                t["epoch2_s"],
                "s",
                f"x {scale:.0f} = {t['epoch2_s'] * scale / 60:.1f} min for 7,000 clips",
            )
        )
    return rows


# --------------------------------------------------------------------------- 4. features


def section_features(bench: Bench) -> list[Row]:
    """4. Waveform -> log-mel cache: clips/s with default threads, and a cache hit."""
    import soundfile as sf

    from asd.data import index_dataset, read_wav
    from asd.features import extract_features

    s = bench.sizes
    cfg = bench.config().features
    with tempfile.TemporaryDirectory(prefix="asd-bench-") as tmp:
        train_dir = Path(tmp) / "data" / "dev_data" / "raw" / "fan" / "train"
        train_dir.mkdir(parents=True)
        for i in range(s.feature_clips):
            wave = harmonic_wave(s.feature_seconds, cfg.sample_rate, f0=100.0 + 7 * i, seed=i)
            sf.write(
                train_dir / f"section_00_source_train_normal_{i:04d}_noAttribute.wav",
                wave,
                cfg.sample_rate,
                subtype="PCM_16",
            )
        index = index_dataset(Path(tmp) / "data")
        start = time.perf_counter()
        for path in index["path"]:
            read_wav(path, cfg.sample_rate)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        features = extract_features(index, cfg, Path(tmp) / "cache", progress=False)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        extract_features(index, cfg, Path(tmp) / "cache", progress=False)
        hit_s = time.perf_counter() - start
        assert len(features) == s.feature_clips
    n, secs = s.feature_clips, s.feature_seconds
    return [
        Row(
            "features",
            "extract_features (cold cache)",
            n / cold_s,
            "clips/s",
            f"{n} clips of {secs:g} s, {torch.get_num_threads()} torch threads, "
            f"{n * secs / cold_s:.0f}x real time",
        ),
        Row(
            "features",
            "  of which read_wav",
            100 * read_s / cold_s,
            "% of time",
            f"{n / read_s:.0f} clips/s decode alone",
        ),
        Row(
            "features",
            "extract_features (cache hit)",
            1000 * hit_s,
            "ms",
            f"{n} clips: hash + memory-mapped load",
        ),
        Row(
            "features",
            "DCASE dev+eval set (~16,800 clips) cold",
            16_800 / (n / cold_s) / 60,
            "min",
            "once per feature config",
        ),
    ]


# --------------------------------------------------------------------------- 5. augmentation


def section_augment(bench: Bench) -> list[Row]:
    """5. make_views on the device; fast mel pitch shift against torchaudio's."""
    from asd.augment import (
        add_white_noise,
        make_views,
        pitch_shift_mel,
        pitch_shift_reference,
        time_mask,
    )
    from asd.features import log_mel

    s, device = bench.sizes, bench.device
    cfg = bench.config()
    x = synthetic_mels(s.augment_clips, s.n_mels, s.frames, device)
    g = torch.Generator(device=device)
    g.manual_seed(0)
    b = s.augment_clips
    views_s = timed(lambda: make_views(x, cfg.augment, cfg.features, g), device, s.warmup, s.iters)
    shifts = torch.full((b,), 3.0, device=device)
    snr = torch.full((b,), 12.0, device=device)
    mask = torch.full((b,), 16, device=device)
    parts = {
        "pitch_shift_mel": lambda: pitch_shift_mel(x, shifts, cfg.features),
        "add_white_noise": lambda: add_white_noise(x, snr, cfg.features, g),
        "time_mask": lambda: time_mask(x, mask, g),
    }
    rows = [
        Row(
            "augment",
            f"make_views ({cfg.augment.n_views} views)",
            b * cfg.augment.n_views / views_s,
            "views/s",
            f"{b} clips x {s.n_mels} x {s.frames} on {device.type}: {1000 * views_s:.0f} ms",
        )
    ]
    for name, fn in parts.items():
        rows.append(
            Row(
                "augment",
                f"  {name}",
                1000 * timed(fn, device, 1, s.iters),
                "ms",
                f"one view of {b} clips",
            )
        )

    # fast vs reference pitch shift, one clip of pitch_seconds on the CPU (as the oracle runs)
    feat = cfg.features
    wave = torch.from_numpy(harmonic_wave(s.pitch_seconds, feat.sample_rate, f0=220.0))
    mel = log_mel(wave, feat)  # (M, T)
    for semitones in (3.0, -5.0):
        start = time.perf_counter()
        ref = pitch_shift_reference(wave, semitones, feat)
        ref_s = time.perf_counter() - start
        steps = torch.tensor([semitones])

        def fast_shift(st: torch.Tensor = steps) -> torch.Tensor:
            return pitch_shift_mel(mel[None], st, feat)

        fast_s = timed(fast_shift, torch.device("cpu"), 1, max(3, s.iters))
        fast = pitch_shift_mel(mel[None], steps, feat)[0]
        frames = min(ref.shape[-1], fast.shape[-1])
        err = (fast[:, :frames] - ref[:, :frames]).abs().mean().item()
        base = (mel[:, :frames] - ref[:, :frames]).abs().mean().item()
        rows += [
            Row(
                "augment",
                f"pitch {semitones:+g} st: torchaudio reference",
                ref_s,
                "s/clip",
                f"{s.pitch_seconds:g} s clip, waveform pitch_shift + log_mel",
            ),
            Row(
                "augment",
                f"pitch {semitones:+g} st: fast (mel)",
                1000 * fast_s,
                "ms/clip",
                f"{ref_s / fast_s:,.0f}x faster than the reference",
            ),
            Row(
                "augment",
                f"pitch {semitones:+g} st: mean |fast - ref|",
                err,
                "dB",
                f"unshifted input vs ref: {base:.1f} dB",
            ),
        ]
    return rows


# --------------------------------------------------------------------------- 6. scoring


def _scoring_data(machines: list[str], per: int, d: int) -> tuple[np.ndarray, Any]:
    """Correlated Gaussian embeddings (per * machines, d); 1% of each machine's are 'target'."""
    import pandas as pd

    rng = np.random.default_rng(0)
    parts = []
    for _ in machines:
        mixing = rng.standard_normal((d, d)) / math.sqrt(d)
        parts.append(rng.standard_normal((per, d)) @ mixing + rng.standard_normal(d))
    domain = np.where(np.arange(per) % 100 == 0, "target", "source")
    meta = pd.DataFrame(
        {
            "machine": np.repeat(machines, per),
            "section": 0,
            "domain": np.tile(domain, len(machines)),
        }
    )
    return np.concatenate(parts), meta


def section_scoring(bench: Bench) -> list[Row]:
    """6. Fit and score N embeddings (7 machine types, 1 section) with both estimators."""
    from asd.scoring import MahalanobisScorer

    s = bench.sizes
    machines = [f"m{i}" for i in range(DCASE_MACHINES)]
    rows = []
    for estimator, clips in (("ml", s.scoring_clips), ("elliptic", s.elliptic_clips)):
        emb, meta = _scoring_data(machines, clips // len(machines), s.scoring_dim)
        per, (n, d) = clips // len(machines), emb.shape
        if estimator == "ml":  # warm-up: SciPy/scikit-learn's first call pays ~2 s of setup
            MahalanobisScorer(estimator="ml").fit(emb[:per], meta.iloc[:per])
        start = time.perf_counter()
        scorer = MahalanobisScorer(estimator=estimator).fit(emb, meta)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        scorer.score_samples(emb, meta)
        score_s = time.perf_counter() - start
        note = f"{n:,} x {d} embeddings, {len(machines)} machine types ({per} each)"
        if estimator == "elliptic" and per <= 500 < DCASE_TRAIN_CLIPS:
            note += (
                "; DCASE has ~1000 per section, where sklearn's FastMCD switches to its "
                "n > 500 subset path: minutes per section on a 2-core CPU"
            )
        rows += [
            Row("scoring", f"{estimator}: fit", fit_s, "s", note),
            Row("scoring", f"{estimator}: score", score_s, "s", f"{n:,} clips"),
        ]
    return rows


# --------------------------------------------------------------------------- 7. sweep overhead


def section_sweep(bench: Bench) -> list[Row]:
    """7. Ray + MLflow cost per trial against the training and evaluation the trials did."""
    try:
        import mlflow
        import optuna  # noqa: F401
        import ray
        import yaml  # noqa: F401

        from asd.sweep import runner
        from asd.tracking import Tracker, default_tracking_uri
    except ImportError as exc:
        return [Row("sweep", "skipped", None, "", f"{exc.name} is not importable (sweep extra)")]
    from asd.data import index_dataset
    from asd.features import extract_features
    from asd.sweep.space import load_space
    from asd.synth import synthesize

    rows: list[Row] = []
    s = bench.sizes
    space_path = REPO / "search_spaces" / "smoke.yaml"
    with tempfile.TemporaryDirectory(prefix="asd-bench-sweep-") as tmp:
        work = Path(tmp)
        # -- MLflow calls on a fresh local store, measured directly
        uri = default_tracking_uri(work)
        start = time.perf_counter()
        tracker = Tracker(uri, "bench", journal_dir=work / "journal-bench")
        parent = tracker.start_sweep("bench", params={"space.x": "uniform[0, 1]"})
        first_s = time.perf_counter() - start
        calls: dict[str, list[float]] = {"start_trial": [], "log_metrics": [], "finish": []}
        metrics = {f"m{i}": float(i) for i in range(40)}  # ~ one epoch's row of a trial
        for trial in range(3):
            t0 = time.perf_counter()
            run = tracker.start_trial(parent, f"t{trial}", params=Config().to_flat())
            calls["start_trial"].append(time.perf_counter() - t0)
            for epoch in range(5):
                t0 = time.perf_counter()
                tracker.log_metrics(run, metrics, step=epoch)
                calls["log_metrics"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tracker.finish(run)
            calls["finish"].append(time.perf_counter() - t0)
        rows.append(
            Row(
                "sweep",
                "MLflow store creation + parent run",
                first_s,
                "s",
                "sqlite: schema migration on first use",
            )
        )
        for name, times in calls.items():
            rows.append(
                Row(
                    "sweep",
                    f"MLflow Tracker.{name}",
                    1000 * statistics.median(times),
                    "ms",
                    "median, journal on, local sqlite",
                )
            )

        # -- a real sweep: smoke space, tiny synthetic data, one trial at a time
        data = synthesize(
            work / "data",
            machines=("fan", "valve"),
            train_source=12,
            train_target=2,
            test_per_domain=3,
            seconds=2.0,
        )
        space = load_space(space_path)
        extract_features(
            index_dataset(data), space.base.features, work / "features", progress=False
        )  # cached: run_sweep's extraction becomes a hit
        start = time.perf_counter()
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, num_cpus=os.cpu_count())
        ray_init_s = time.perf_counter() - start
        phases: dict[str, float] = {}
        originals = {name: getattr(runner, name) for name in ("_tune", "_register")}

        def timing(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    phases[name] = time.perf_counter() - t0

            return wrapper

        settings = runner.SweepSettings(
            space=space_path,
            data=data,
            workdir=work,
            num_samples=s.sweep_trials,
            max_concurrent_trials=1,
            device=bench.device.type,
            gpus_per_trial=1.0 if bench.cuda else 0.0,
        )
        log_file = work / "sweep.log"
        ray_log = logging.getLogger("ray")
        ray_level = ray_log.level
        try:
            ray_log.setLevel(logging.ERROR)  # Tune's progress lines would bury the table
            for name, fn in originals.items():
                setattr(runner, name, timing(name, fn))
            start = time.perf_counter()
            with (
                open(log_file, "w") as log,
                contextlib.redirect_stdout(log),
                contextlib.redirect_stderr(log),
            ):
                result = runner.run_sweep(settings)
            wall = time.perf_counter() - start
        finally:
            for name, fn in originals.items():
                setattr(runner, name, fn)
            ray_log.setLevel(ray_level)
            ray.shutdown()
        client = mlflow.MlflowClient(tracking_uri=default_tracking_uri(work))
        exp = client.get_experiment_by_name(settings.experiment)
        assert exp is not None, "run_sweep created the experiment"
        runs = client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
        )
        train_s = sum(r.data.metrics.get("time.train_s", 0.0) for r in runs)
        eval_s = sum(r.data.metrics.get("time.eval_s", 0.0) for r in runs)
        trials = max(len(runs), 1)
        tune_s = phases.get("_tune", wall)
        overhead = tune_s - train_s - eval_s
        statuses = result.summary["status"].value_counts().to_dict() if len(result.summary) else {}
    bench.measured["sweep_trial_overhead_s"] = overhead / trials
    rows += [
        Row("sweep", "Ray init (in-process)", ray_init_s, "s", f"num_cpus={os.cpu_count()}"),
        Row(
            "sweep",
            "run_sweep wall",
            wall,
            "s",
            f"smoke.yaml, {len(runs)} trials one at a time ({statuses}), 2 machine types",
        ),
        Row("sweep", "  Tune phase (tuner.fit)", tune_s, "s", "trials + Ray/Tune/MLflow in them"),
        Row(
            "sweep",
            "  trials' train + eval (their time.* metrics)",
            train_s + eval_s,
            "s",
            f"train {train_s:.1f} s + eval {eval_s:.1f} s, summed over trials",
        ),
        Row(
            "sweep",
            "  overhead per trial",
            overhead / trials,
            "s",
            "Tune scheduling, actor start, imports, MLflow run, checkpoints, final artifacts",
        ),
        Row(
            "sweep",
            "  overhead share of the Tune phase",
            100 * overhead / tune_s,
            "%",
            "tiny trials: a 1-h trial would make this share ~0",
        ),
        Row(
            "sweep",
            "  register winner (log_encoder + registry)",
            phases.get("_register"),
            "s",
            "once per sweep",
        ),
        Row(
            "sweep",
            "  rest of run_sweep (space, data, cache hit, parent run)",
            wall - tune_s - phases.get("_register", 0.0),
            "s",
            "once per sweep",
        ),
    ]
    return rows


# --------------------------------------------------------------------------- 8. scale


def _scale_worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _scale_warm(_: int) -> int:
    import asd.train  # noqa: F401  (imports are part of a trial's start, not of its job)

    time.sleep(0.5)  # overlap, so every worker of the pool gets started
    return os.getpid()


def _scale_job(
    n_mels: int, frames: int, n_clips: int, crop: int, batch: int, device: str, seed: int
) -> float:
    """A fixed tiny training job (one epoch of train()); returns its wall seconds."""
    from asd.train import train

    cfg = Config().with_overrides(
        {
            "features.n_mels": n_mels,
            "train.crop_frames": crop,
            "train.batch_size": batch,
            "train.epochs": 1,
            "train.lr": 1e-3,
            "train.seed": seed,
        }
    )
    clips = synthetic_mels(n_clips, n_mels, frames, torch.device("cpu"), seed).numpy()
    start = time.perf_counter()
    train(
        cfg,
        clips,
        np.full(n_clips, frames),
        np.full(n_mels, -45.0),
        np.full(n_mels, 15.0),
        device=device,
        progress=False,
    )
    return time.perf_counter() - start


def section_scale(bench: Bench) -> list[Row]:
    """8. Time against data size and against trials at a time; a full-sweep projection."""
    from asd.train import train

    s, rows = bench.sizes, []
    cores = os.cpu_count() or 1
    # -- clips: one epoch of train() at a tiny crop, 1x / 2x / 4x the clips
    cfg = bench.config(
        **{"train.crop_frames": s.scale_crop, "train.batch_size": s.scale_batch, "train.epochs": 1}
    )
    most = s.scale_base_clips * max(s.scale_levels)
    clips = synthetic_mels(most, s.n_mels, s.frames, torch.device("cpu")).numpy()
    mean, std = np.full(s.n_mels, -45.0), np.full(s.n_mels, 15.0)

    def epoch_seconds(n: int) -> float:
        result = train(
            cfg, clips[:n], np.full(n, s.frames), mean, std, device=bench.device, progress=False
        )
        return result.history[0]["seconds"]

    epoch_seconds(s.scale_base_clips)  # warm-up
    base = None
    for m in s.scale_levels:
        secs = epoch_seconds(s.scale_base_clips * m)
        base = base or secs
        rows.append(
            Row(
                "scale",
                f"train() epoch, {m}x clips ({s.scale_base_clips * m})",
                secs,
                "s",
                f"crop {s.scale_crop}, batch {s.scale_batch}, 6 views; "
                f"{secs / base:.2f}x the 1x time",
            )
        )

    # -- trials at a time: `scale_jobs` identical jobs over k worker processes
    ctx = mp.get_context("spawn")
    job = (s.n_mels, s.frames, s.scale_base_clips, s.scale_crop, s.scale_batch, bench.device.type)
    first = None
    for k in s.scale_levels:
        threads = max(1, cores // k)
        with ProcessPoolExecutor(
            k, mp_context=ctx, initializer=_scale_worker_init, initargs=(threads,)
        ) as pool:
            list(pool.map(_scale_warm, range(k)))
            start = time.perf_counter()
            futures = [pool.submit(_scale_job, *job, seed) for seed in range(s.scale_jobs)]
            job_s = [f.result() for f in futures]
            wall = time.perf_counter() - start
        first = first or wall
        speedup = first / wall
        bench.measured["concurrency_speedup"] = max(
            bench.measured.get("concurrency_speedup", 1.0), speedup
        )
        rows.append(
            Row(
                "scale",
                f"{s.scale_jobs} trials, {k} at a time",
                wall,
                "s",
                f"{threads} threads each, job {statistics.median(job_s):.1f} s median; "
                f"throughput {speedup:.2f}x of 1 at a time",
            )
        )

    # -- projection of a DCASE-sized sweep
    rows += projection_rows(bench)
    return rows


def projection_rows(bench: Bench) -> list[Row]:
    """Hours of a DCASE-sized sweep on this CPU and on one GPU (measured or assumed)."""
    samples = DCASE_MACHINES * DCASE_TRAIN_CLIPS * (1 + PAPER_VIEWS)
    eval_clips = DCASE_MACHINES * DCASE_EVAL_CLIPS
    formula = (
        f"sweep_h = trials x epochs x ({DCASE_MACHINES} x {DCASE_TRAIN_CLIPS} x "
        f"(1+{PAPER_VIEWS}) / S_train + {DCASE_MACHINES} x {DCASE_EVAL_CLIPS} / S_embed)"
        f" / parallel / 3600,  trials={SWEEP_TRIALS}, epochs={SWEEP_EPOCHS} "
        "(search_spaces/default.yaml, before ASHA stops any)"
    )
    bench.notes.append(formula)
    rows = []
    if not any(k in bench.measured for k in ("train_sps", "step_sps", "cpu_model_sps")):
        bench.measured["cpu_model_sps"] = (
            model_sps(bench)
            if not bench.cuda
            else measure_model(
                bench, torch.device("cpu"), encoder_batch(bench, 2), False, False, False
            )[0]
        )
    if bench.cuda:  # only the model-only figure was measured on this machine's CPU
        cpu_train = bench.measured.get("cpu_model_sps")
    else:
        cpu_train = (  # the step's median beats one epoch's mean on a shared CPU
            bench.measured.get("step_sps")
            or bench.measured.get("train_sps")
            or bench.measured.get("cpu_model_sps")
        )
    cpu_embed = None if bench.cuda else bench.measured.get("embed_cps")
    parallel = 1.0 if bench.cuda else bench.measured.get("concurrency_speedup", 1.0)
    if cpu_train:
        cpu_embed = cpu_embed or cpu_train * 3  # forward only ~ 1/3 of fwd+bwd
        epoch_s = samples / cpu_train + eval_clips / cpu_embed
        hours = SWEEP_TRIALS * SWEEP_EPOCHS * epoch_s / parallel / 3600
        line = (
            f"CPU ({os.cpu_count()} cores): S_train={cpu_train:.0f}/s, S_embed="
            f"{cpu_embed:.0f}/s, parallel={parallel:.2f} -> epoch {epoch_s / 3600:.2f} h, "
            f"sweep {hours:,.0f} h ({hours / 24:,.0f} days)"
        )
        bench.notes.append(line)
        rows.append(Row("scale", "projected DCASE sweep on this CPU", hours, "h", line))
    if bench.cuda:
        gpu_train, source = (
            bench.measured.get("step_sps") or bench.measured.get("train_sps"),
            "measured",
        )
        gpu_embed = bench.measured.get("embed_cps")
    else:
        gpu_train, gpu_embed, source = None, None, "assumed"
    if not gpu_train:
        gpu_train = bench.gpu_samples_per_s or ASSUMED_GPU_SAMPLES_PER_S
        source = "assumed (--gpu-samples-per-s)"
    gpu_embed = gpu_embed or gpu_train * 3
    epoch_s = samples / gpu_train + eval_clips / gpu_embed
    hours = SWEEP_TRIALS * SWEEP_EPOCHS * epoch_s / 3600
    line = (
        f"1 GPU, {source}: S_train={gpu_train:.0f}/s, S_embed={gpu_embed:.0f}/s -> epoch "
        f"{epoch_s / 60:.1f} min, sweep {hours:.1f} h (N GPUs: / N, one trial per GPU)"
    )
    bench.notes.append(line)
    rows.append(Row("scale", "projected DCASE sweep on 1 GPU", hours, "h", line))
    return rows


# --------------------------------------------------------------------------- driver


SECTIONS: dict[str, Callable[[Bench], list[Row]]] = {
    "model": section_model,
    "step": section_step,
    "epoch": section_epoch,
    "features": section_features,
    "augment": section_augment,
    "scoring": section_scoring,
    "sweep": section_sweep,
    "scale": section_scale,
}


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    with contextlib.suppress(OSError):
        info["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def to_markdown(info: dict[str, Any], rows: list[Row], notes: list[str]) -> str:
    """The one table, with the machine above it and the projection lines under it."""
    head = (
        f"asd benchmark ({info.get('mode')}) {info['date']}: {info['cpu']}, "
        f"{info['cores']} cores ({info['torch_threads']} torch threads), torch "
        f"{info['torch']}, device {info['device']}"
        + (f" ({info['cuda_device']})" if info.get("cuda_device") else "")
        + f", load average {info.get('load_average_start')} -> "
        f"{info.get('load_average_end')}, {info.get('total_s', 0):.0f} s"
    )
    lines = [head, "", "| section | figure | value | unit | note |", "|---|---|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.section} | {r.name} | {_fmt(r.value)} | {r.unit} | {r.note.replace('|', '/')} |"
        )
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def run(bench: Bench, sections: list[str]) -> tuple[dict[str, Any], list[Row]]:
    """Run ``sections`` in order; a failing section becomes an error row, the rest go on."""
    info = machine_info(bench.device)
    info["mode"] = bench.sizes.mode
    rows: list[Row] = []
    began = time.perf_counter()
    for name in sections:
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            rows += SECTIONS[name](bench)
        except Exception as exc:
            traceback.print_exc()
            rows.append(Row(name, "error", None, "", _one_line(exc)))
        print(
            f"[bench] {name} done in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    info["total_s"] = time.perf_counter() - began
    with contextlib.suppress(OSError):
        info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return info, rows


def write(out: Path, info: dict[str, Any], rows: list[Row], notes: list[str]) -> str:
    """Write ``<out>.md`` and ``<out>.json``; returns the markdown."""
    text = to_markdown(info, rows, notes)
    out = out.with_suffix("") if out.suffix in (".md", ".json") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    payload = {"machine": info, "rows": [asdict(r) for r in rows], "notes": notes}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (< 2 min on a 2-core CPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of: {','.join(SECTIONS)}",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results" / "latest",
        help="writes <out>.md and <out>.json",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile on CPU (on CUDA it always runs)",
    )
    p.add_argument(
        "--gpu-samples-per-s",
        type=float,
        default=None,
        help=f"GPU training throughput for the projection when no GPU is here "
        f"(default: assumed {ASSUMED_GPU_SAMPLES_PER_S:.0f})",
    )
    p.add_argument("--mode", default=None, choices=("full", "quick", "toy"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    # Local defaults, as the CLI sets them: no Ray token auth, no MLflow telemetry.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parse_args(argv)
    from asd.train import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmark: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    mode = args.mode or ("quick" if args.quick else "full")
    bench = Bench(
        device=device,
        sizes=sizes_for(mode, device),
        compile_cpu=args.compile,
        gpu_samples_per_s=args.gpu_samples_per_s,
    )
    info, rows = run(bench, args.sections.split(","))
    text = write(args.out, info, rows, bench.notes)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
