"""5. Augmentation: make_views on the device; the fast mel pitch shift against torchaudio's."""

from __future__ import annotations

import time

import torch

from asd.features import log_mel
from asd.model.augment import (
    add_white_noise,
    make_views,
    pitch_shift_mel,
    pitch_shift_reference,
    time_mask,
)
from benchmarks.harness import Bench, Row, harmonic_wave, synthetic_mels, timed


def section(bench: Bench) -> list[Row]:
    """5. make_views on the device; fast mel pitch shift against torchaudio's."""
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
