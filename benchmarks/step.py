"""2. The training step: ``asd.model.train.make_batch`` (crops -> views) and
``asd.model.train.train_step``
(encoder -> NT-Xent -> Adam), the functions train() calls, timed one step at a time; then
``asd.model.train.train`` itself for 2 epochs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from asd.model.batches import TrainClips
from asd.model.encoder import Encoder
from asd.model.train import make_batch as train_batch
from asd.model.train import precision, train, train_step
from benchmarks.harness import (
    Bench,
    Row,
    encoder_batch,
    synthetic_mels,
    timed,
    tiny_normalisation,
)
from benchmarks.model import model_sps


def step_closures(
    bench: Bench, n_clips: int
) -> tuple[Callable[[], torch.Tensor], Callable[[], None]]:
    """(make_batch, step) closures over train()'s own functions, features on the device."""
    cfg, device, batch = bench.config(), bench.device, bench.sizes.clips_per_step
    clips = synthetic_mels(n_clips, bench.sizes.n_mels, bench.sizes.frames, device)
    valid = torch.full((n_clips,), bench.sizes.frames, device=device)
    torch.manual_seed(0)
    encoder = Encoder(cfg.encoder, cfg.features.n_mels).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-4)
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    order = torch.randperm(n_clips, generator=generator, device=device)
    n_steps = max(1, n_clips // batch)
    autocast = precision(device, cfg.train.amp)
    state = {"step": 0}

    def make_batch() -> torch.Tensor:
        i = state["step"] % n_steps
        state["step"] += 1
        positions = order[i * batch : (i + 1) * batch]  # (B,)
        return train_batch(clips, valid, positions, cfg, generator, generator)[0]  # (B, V, M, T)

    def step() -> None:
        train_step(encoder, optimizer, make_batch(), cfg, autocast)  # (loss, None)

    return make_batch, step


def measure_train(bench: Bench) -> dict[str, float]:
    """asd.model.train.train itself: 2 epochs of ``train_steps`` steps; per-epoch samples/s."""
    s = bench.sizes
    n = s.train_steps * s.clips_per_step
    cfg = bench.config(**{"train.epochs": 2, "train.batch_size": s.clips_per_step})
    clips = synthetic_mels(n, s.n_mels, s.frames, torch.device("cpu")).numpy()
    lengths = np.full(n, s.frames)
    mean, std = tiny_normalisation(s.n_mels)
    result = train(cfg, TrainClips(clips, lengths, mean, std), device=bench.device, progress=False)
    first, last = result.history[0], result.history[-1]
    return {
        "clips": n,
        "epoch1_sps": first["samples_per_s"],
        "epoch2_sps": last["samples_per_s"],
        "epoch2_s": last["seconds"],
    }


def section(bench: Bench) -> list[Row]:
    """2. The real step (crops -> views -> encoder -> NT-Xent -> Adam) and train() itself."""
    s = bench.sizes
    n = encoder_batch(bench)
    make_batch, step = step_closures(bench, n_clips=8 * s.clips_per_step)
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
            "full step (asd.model.train.make_batch + train_step)",
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
            "asd.model.train.train epoch 1",
            t["epoch1_sps"],
            "samples/s",
            f"{int(t['clips'])} clips, {s.train_steps} steps; includes warm-up",
        ),
        Row(
            "step",
            "asd.model.train.train epoch 2",
            t["epoch2_sps"],
            "samples/s",
            f"steady state; {t['epoch2_sps'] / model:.2f} of model-only",
        ),
    ]
    return rows
