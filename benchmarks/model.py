"""1. Model only: encoder forward + backward + Adam on a fixed batch, the floor a step
cannot beat; eval-mode embedding throughput (the per-epoch validation pass)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import torch

from asd.model.encoder import Encoder
from asd.model.train import precision
from benchmarks.harness import Bench, Row, encoder_batch, one_line, sync, synthetic_mels, timed


def model_step(
    bench: Bench,
    device: torch.device,
    samples: int,
    amp: bool,
    channels_last: bool,
    compiled: bool,
) -> Callable[[], None]:
    """Encoder forward+backward+Adam on a fixed synthetic batch (samples, n_mels, frames)."""
    cfg = bench.config()
    torch.manual_seed(0)
    encoder = Encoder(cfg.encoder, cfg.features.n_mels).to(device)
    if channels_last:
        encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model = torch.compile(encoder) if compiled else encoder
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-4)
    x = synthetic_mels(samples, bench.sizes.n_mels, bench.sizes.frames, device)

    def step() -> None:
        with precision(device, amp):
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
    cfg = bench.config()
    encoder = Encoder(cfg.encoder, cfg.features.n_mels).to(device).eval()
    n = bench.sizes.embed_batch
    x = synthetic_mels(n, bench.sizes.n_mels, bench.sizes.frames, device)

    def forward() -> None:
        with torch.no_grad(), precision(device, True):
            encoder.embed(x)

    s = bench.sizes
    return n / timed(forward, device, max(1, s.warmup // 2), max(2, s.iters // 2))


def model_sps(bench: Bench) -> float:
    """Model-only samples/s on the run's device with train()'s settings (the ratio's floor)."""
    n = encoder_batch(bench)
    return bench.once(
        "model_sps", lambda: measure_model(bench, bench.device, n, bench.cuda, bench.cuda, False)[0]
    )


def section(bench: Bench) -> list[Row]:
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
            rows.append(Row("model", "cuda torch.compile", None, "", f"failed: {one_line(exc)}"))
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
