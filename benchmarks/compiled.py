"""9. Compiled training: ``train()`` with ``train.compile=on`` run as two trials of a sweep.

Each trial is a fresh process (as a new Ray worker would be) pointed at the same compile
cache folder (:func:`asd.model.compilation.use_compile_cache`). A trial trains 2 epochs: epoch 1
includes the compile, epoch 2 is the steady state, so compile time = epoch 1 - epoch 2.
The second trial shows what the shared cache saves (target on an H100: <= 5 s).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from asd.config import Config
from asd.model.batches import TrainClips
from asd.model.compilation import use_compile_cache
from asd.model.train import train
from benchmarks.harness import Bench, Row, one_line, synthetic_mels, tiny_normalisation


def compiled_trial(
    cache: str, n_mels: int, frames: int, clips: int, batch: int, device: str, backend: str
) -> dict[str, float]:
    """One trial in this process: 2 compiled epochs; (compile seconds, epoch-2 samples/s)."""
    use_compile_cache(cache)
    cfg = Config().with_overrides(
        {
            "features.n_mels": n_mels,
            "train.crop_frames": frames,
            "train.batch_size": batch,
            "train.epochs": 2,
            "train.lr": 1e-3,
            "train.compile": "on",
            "train.compile_backend": backend,
        }
    )
    data = synthetic_mels(clips, n_mels, frames, torch.device("cpu")).numpy()
    mean, std = tiny_normalisation(n_mels)
    data = TrainClips(data, np.full(clips, frames), mean, std)
    result = train(cfg, data, device=device, progress=False)
    first, second = result.history
    return {
        "compile_s": max(first["seconds"] - second["seconds"], 0.0),
        "sps": second["samples_per_s"],
        "epoch_s": second["seconds"],
    }


def section(bench: Bench) -> list[Row]:
    """Two compiled trials sharing one cache: throughput, first and second compile time."""
    s = bench.sizes
    clips = s.compile_clips if not bench.cuda else 8 * s.clips_per_step
    job = (s.n_mels, s.frames, clips, s.clips_per_step, bench.device.type, "inductor")
    trials = []
    with tempfile.TemporaryDirectory(prefix="asd-bench-compile-") as cache:
        for _ in range(2):
            # a new process per trial: nothing of the first compile survives in memory
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                try:
                    trials.append(pool.submit(compiled_trial, cache, *job).result())
                except Exception as exc:  # inductor needs a C++ compiler (CPU) or triton
                    return [Row("compile", "torch.compile", None, "", f"failed: {one_line(exc)}")]
    first, second = trials
    bench.measured["compiled_train_sps"] = second["sps"]
    eager = bench.measured.get("train_sps")
    where = f"{bench.device.type}, inductor, {clips} clips x {s.clips_per_step}/step"
    return [
        Row(
            "compile",
            "compiled train() epoch 2",
            second["sps"],
            "samples/s",
            where + (f"; {second['sps'] / eager:.2f}x eager train()" if eager else ""),
        ),
        Row(
            "compile",
            "first trial: compile time",
            first["compile_s"],
            "s",
            "epoch 1 - epoch 2 of a fresh process with an empty cache",
        ),
        Row(
            "compile",
            "second trial: compile time",
            second["compile_s"],
            "s",
            "fresh process, the first trial's cache folder (FX graph + autograd caches)",
        ),
    ]
