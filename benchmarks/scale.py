"""8. Scaling: a train() epoch against data size, trials at a time in worker processes,
and the projection of a DCASE-sized sweep (:mod:`benchmarks.projection`)."""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from asd.config import Config
from asd.model.batches import TrainClips
from asd.model.train import train
from benchmarks import projection
from benchmarks.harness import Bench, Row, synthetic_mels, tiny_normalisation


def _scale_worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _scale_warm(_: int) -> int:
    time.sleep(0.5)  # overlap, so every worker of the pool gets started
    return os.getpid()


def _scale_job(
    n_mels: int, frames: int, n_clips: int, crop: int, batch: int, device: str, seed: int
) -> float:
    """A fixed tiny training job (one epoch of train()); returns its wall seconds."""
    cfg = Config().with_overrides(
        {
            "features.n_mels": n_mels,
            "train.crop_frames": crop,
            "train.batch_size": batch,
            "train.epochs": 1,
            "train.lr": 1e-3,
            "train.compile": "off",  # a tiny job: a compile would dominate its time
            "train.seed": seed,
        }
    )
    clips = synthetic_mels(n_clips, n_mels, frames, torch.device("cpu"), seed).numpy()
    start = time.perf_counter()
    data = TrainClips(clips, np.full(n_clips, frames), *tiny_normalisation(n_mels))
    train(cfg, data, device=device, progress=False)
    return time.perf_counter() - start


def section(bench: Bench) -> list[Row]:
    """8. Time against data size and against trials at a time; a full-sweep projection."""
    s, rows = bench.sizes, []
    cores = os.cpu_count() or 1
    # -- clips: one epoch of train() at a tiny crop, 1x / 2x / 4x the clips
    cfg = bench.config(
        **{"train.crop_frames": s.scale_crop, "train.batch_size": s.scale_batch, "train.epochs": 1}
    )
    most = s.scale_base_clips * max(s.scale_levels)
    clips = synthetic_mels(most, s.n_mels, s.frames, torch.device("cpu")).numpy()
    mean, std = tiny_normalisation(s.n_mels)

    def epoch_seconds(n: int) -> float:
        data = TrainClips(clips[:n], np.full(n, s.frames), mean, std)
        result = train(cfg, data, device=bench.device, progress=False)
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
    rows += projection.rows(bench)
    return rows
