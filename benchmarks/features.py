"""4. Waveform -> log-mel cache: clips/s on fresh WAVs, the decode share, a cache hit."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from asd.data.index import index_dataset, read_wav
from asd.features import extract_features
from benchmarks.harness import Bench, Row, harmonic_wave


def section(bench: Bench) -> list[Row]:
    """4. Waveform -> log-mel cache: clips/s with default threads, and a cache hit."""
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
