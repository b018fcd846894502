"""Hours of a DCASE-sized sweep (32 trials x 24 epochs) on this CPU and on 1 and 8 GPUs.

GPU rates are this run's when it ran with ``--device cuda``; otherwise the H100 figures measured
in November 2026 (issue 12), labelled as such. Per trial it adds what this run
measured of the work outside the epochs: the DCASE-size ``elliptic`` fit at the last epoch
(``scoring`` section) and Ray/Tune/MLflow's per-trial overhead (``sweep`` section).
"""

from __future__ import annotations

import math
import os

from benchmarks.harness import (
    DCASE_EVAL_CLIPS,
    DCASE_MACHINES,
    DCASE_TRAIN_CLIPS,
    H100_COMPILED_SAMPLES_PER_S,
    H100_EMBED_CLIPS_PER_S,
    H100_TRAIN_SAMPLES_PER_S,
    PAPER_VIEWS,
    SWEEP_EPOCHS,
    SWEEP_TRIALS,
    Bench,
    Row,
    encoder_batch,
)
from benchmarks.model import measure_model, model_sps

SAMPLES = DCASE_MACHINES * DCASE_TRAIN_CLIPS * (1 + PAPER_VIEWS)
"""Encoder inputs per DCASE epoch: 7 machine types x 1,000 clips x (1 + 6 views)."""
EVAL_CLIPS = DCASE_MACHINES * DCASE_EVAL_CLIPS
"""Clips a trial embeds per epoch for validation."""
GPU_COUNTS = (1, 8)


def epoch_seconds(train_sps: float, embed_cps: float) -> float:
    """One DCASE epoch: training samples plus the validation embedding pass."""
    return SAMPLES / train_sps + EVAL_CLIPS / embed_cps


def rows(bench: Bench) -> list[Row]:
    """The CPU projection and the 1- and 8-GPU projections (eager and compiled)."""
    bench.notes.append(
        f"sweep_h = ceil(trials / GPUs) x (epochs x ({DCASE_MACHINES} x {DCASE_TRAIN_CLIPS} x "
        f"(1+{PAPER_VIEWS}) / S_train + {DCASE_MACHINES} x {DCASE_EVAL_CLIPS} / S_embed) + "
        f"elliptic fit + trial overhead) / 3600, trials={SWEEP_TRIALS}, epochs={SWEEP_EPOCHS} "
        "(search_spaces/default.yaml, before ASHA stops any); one trial per GPU"
    )
    return cpu_rows(bench) + gpu_rows(bench)


def cpu_rows(bench: Bench) -> list[Row]:
    """This CPU, trials at a time as the ``scale`` section measured."""
    m = bench.measured
    if bench.cuda:  # only the model-only figure was measured on this machine's CPU
        if "cpu_model_sps" not in m:
            n = encoder_batch(bench, 2)
            m["cpu_model_sps"] = measure_model(bench, bench.device, n, False, False, False)[0]
        train_sps, embed = m["cpu_model_sps"], None
    else:  # the step's median beats one epoch's mean on a shared CPU
        train_sps = m.get("step_sps") or m.get("train_sps") or model_sps(bench)
        embed = m.get("embed_cps")
    embed = embed or train_sps * 3  # forward only ~ 1/3 of fwd+bwd
    parallel = 1.0 if bench.cuda else m.get("concurrency_speedup", 1.0)
    epoch_s = epoch_seconds(train_sps, embed)
    hours = SWEEP_TRIALS * SWEEP_EPOCHS * epoch_s / parallel / 3600
    line = (
        f"CPU ({os.cpu_count()} cores, measured): S_train={train_sps:.0f}/s, S_embed="
        f"{embed:.0f}/s, parallel={parallel:.2f} -> epoch {epoch_s / 3600:.2f} h, "
        f"sweep {hours:,.0f} h ({hours / 24:,.0f} days)"
    )
    bench.notes.append(line)
    return [Row("scale", "projected DCASE sweep on this CPU", hours, "h", line)]


def gpu_rates(bench: Bench) -> tuple[float, float, float, str]:
    """(eager train samples/s, compiled train samples/s, embed clips/s, where they are from)."""
    m = bench.measured
    if bench.cuda and (m.get("train_sps") or m.get("step_sps")):
        eager = m.get("train_sps") or m["step_sps"]
        compiled = m.get("compiled_train_sps") or eager
        return eager, compiled, m.get("embed_cps") or eager * 3, "measured here"
    eager = bench.gpu_samples_per_s or H100_TRAIN_SAMPLES_PER_S
    # train() reached 0.98 of the eager model-only rate on the H100: assume the same share
    # of the compiled model-only rate (a projection, not a measurement)
    compiled = H100_COMPILED_SAMPLES_PER_S * 0.98
    source = (
        "given by --gpu-samples-per-s"
        if bench.gpu_samples_per_s
        else "H100, measured 2026-11 (issue 12)"
    )
    return eager, compiled, H100_EMBED_CLIPS_PER_S, source


def gpu_rows(bench: Bench) -> list[Row]:
    """1 and 8 GPUs, eager and compiled, one trial per GPU."""
    eager, compiled, embed, source = gpu_rates(bench)
    m = bench.measured
    extra = m.get("elliptic_fit_s", 0.0) + m.get("trial_overhead_s", 0.0)
    out = []
    for label, sps in (("eager", eager), ("compiled", compiled)):
        epoch_s = epoch_seconds(sps, embed)
        trial_s = SWEEP_EPOCHS * epoch_s + extra
        for gpus in GPU_COUNTS:
            hours = math.ceil(SWEEP_TRIALS / gpus) * trial_s / 3600
            line = (
                f"{gpus} GPU{'s' if gpus > 1 else ''}, {label}, {source}: S_train={sps:,.0f}/s, "
                f"S_embed={embed:,.0f}/s -> epoch {epoch_s:.1f} s, trial {trial_s / 60:.1f} min "
                f"(+{extra:.0f} s elliptic fit and overhead measured on this machine), "
                f"sweep {hours:.2f} h"
            )
            bench.notes.append(line)
            out.append(
                Row("scale", f"projected DCASE sweep, {gpus} GPU, {label}", hours, "h", line)
            )
    return out
