"""10. Batch scoring with a frozen detector: `asd score --model` over a folder, clips/s on CPU.

A reference detector (log-mel mean+std, Mahalanobis) is fitted on a small synthetic machine,
then a folder of 10 s clips is streamed through :func:`asd.serve.audio.score_files` in
batches of 256, as `asd score --model` does (read wav, log-mel, pool, score).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from asd.data.layouts import index_data
from asd.data.synth.tree import synthesize
from asd.detect.artifact import fit_detector
from asd.features import extract_features
from asd.serve.audio import score_files
from benchmarks.harness import Bench, Row

CLIPS = {"full": 5000, "quick": 500, "toy": 20}
"""Clips scored per mode."""


def section(bench: Bench) -> list[Row]:
    """10. Clips per second of `asd score --model` on a folder (CPU, batches of 256)."""
    n = CLIPS.get(bench.sizes.mode, CLIPS["quick"])
    seconds = 1.0 if bench.sizes.mode == "toy" else 10.0
    cfg = bench.config(**{"scoring.family": "reference", "scoring.reference": "meanstd"})
    with tempfile.TemporaryDirectory(prefix="asd-bench-serve-") as tmp:
        root = synthesize(Path(tmp) / "data", machines=("fan",), train_target=2,
                          test_per_domain=2, seconds=seconds)  # fmt: skip
        features = extract_features(index_data(root), cfg.features, Path(tmp) / "f", False)
        detector = fit_detector(None, features, cfg)
        rate = cfg.features.sample_rate
        wave = np.random.default_rng(0).standard_normal(int(seconds * rate)).astype("float32")
        folder = Path(tmp) / "clips"
        folder.mkdir()
        paths = [folder / f"clip_{i:05d}.wav" for i in range(n)]
        for p in paths:
            sf.write(p, 0.1 * wave, rate)
        start = time.perf_counter()
        scored = sum(len(b) for b in score_files(detector, paths, "fan", 0, 256))
        elapsed = time.perf_counter() - start
    note = f"{scored:,} clips of {seconds:g} s, reference meanstd + ml, batches of 256, CPU"
    return [Row("serving", "asd score --model: clips/s", scored / elapsed, "clips/s", note)]
