"""Where a sweep trial's time goes: training, per-epoch validation, final evaluation, overhead.

Standalone (not a ``run.py`` section)::

    python benchmarks/trial_costs.py --size small     # a few minutes on an idle 2-core CPU
    python benchmarks/trial_costs.py --size small --out benchmarks/results/trial_costs
    python benchmarks/trial_costs.py --size small --latest   # into results/latest.md

It runs two real sweeps on synthetic data, one trial at a time (in-process Ray, a local MLflow
store), and prints per trial and summed: training, per-epoch validation (the cheap estimate
ASHA reads), full evaluations (every scorer, out-of-fold, companions), the other in-trial
items (MLflow run and features, logging and artifacts, checkpoints) and the overhead outside
the trial function (Tune, actors). Then the fixed costs one by one (imports, actor start and
reuse, MLflow calls, checkpoint writes, artifacts, system metrics), the rank correlation of
the per-epoch estimate with the full figure, and a projection to a GPU node:

- ``quick``: base ``quick``, searching ``scoring.family``, ``scoring.reference`` and the
  temperature, 7 machine types x 50 clips of 4 s, 5 tuned and 2 held out, 6 trials;
- ``paper``: the paper preset (ResNet-18, 128 mels, 10 s crops, batch 48) for 2 epochs on
  fewer clips, the size a CPU allows.

Timings depend on the machine and its load (the header prints the load average): compare
runs on the same, quiet machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python benchmarks/trial_costs.py` from a checkout

from benchmarks.harness import H100_TRAIN_SAMPLES_PER_S, splice_trial_costs  # noqa: E402

LATEST = REPO / "benchmarks" / "results" / "latest.md"
GPU_NODE_CORES = 16
"""CPU cores of the GPU node the projection is for (one trial per node)."""
TIMES = ("setup_s", "train_s", "validate_s", "final_s", "log_s", "checkpoint_s")


@dataclass(frozen=True)
class SweepCase:
    """One benchmark sweep: its space, its synthetic data, what it is held out on."""

    name: str
    base: str
    fixed: dict[str, Any]
    params: dict[str, str]
    trials: int
    data: dict[str, Any]
    holdout: tuple[str, ...]
    grace_period: int = 5


def cases(size: str) -> list[SweepCase]:
    """The two sweeps at ``size``: 'small' (the lead's measurement) or 'tiny' (tests)."""
    search = {
        "scoring.family": "{choice: [encoder, reference, fusion]}",
        "scoring.reference": "{choice: [mean, mean_std]}",
        "loss.temperature": "{loguniform: [0.03, 0.3]}",
    }
    if size == "tiny":
        tiny = {"features.n_mels": 32, "train.crop_frames": 16, "train.batch_size": 6}
        data = dict(
            machines=("fan", "slider", "valve"),
            train_source=8,
            train_target=2,
            test_per_domain=2,
            seconds=1.0,
        )
        paper = {**tiny, "train.epochs": 1, "encoder.width": 8, "augment.n_views": 2}
        return [
            SweepCase(
                "quick",
                "smoke",
                {**tiny, "train.epochs": 2},
                search,
                trials=2,
                data=data,
                holdout=("valve",),
                grace_period=1,
            ),
            SweepCase(
                "paper",
                "paper",
                paper,
                {"scoring.family": "{choice: [fusion]}"},
                trials=1,
                data=data,
                holdout=("valve",),
                grace_period=1,
            ),
        ]
    if size != "small":
        raise ValueError(f"unknown size {size!r}")
    quick_data = dict(train_source=45, train_target=5, test_per_domain=10, seconds=4.0)
    paper_data = dict(
        machines=("fan", "slider", "valve"),
        train_source=10,
        train_target=2,
        test_per_domain=4,
        seconds=4.0,
    )
    return [
        SweepCase("quick", "quick", {}, search, 6, quick_data, ("ToyCar", "valve")),
        SweepCase(
            "paper",
            "paper",
            {"train.epochs": 2},
            {"scoring.family": "{choice: [encoder, fusion]}"},
            trials=2,
            data=paper_data,
            holdout=("valve",),
            grace_period=2,
        ),
    ]


def write_space(case: SweepCase, path: Path) -> Path:
    """The case's search space as YAML (JSON is YAML)."""
    lines = [f"description: trial-cost benchmark ({case.name})", f"base: {case.base}"]
    lines.append("fixed:" if case.fixed else "fixed: {}")
    lines += [f"  {k}: {json.dumps(v)}" for k, v in case.fixed.items()]
    lines.append("params:")
    lines += [f"  {k}: {v}" for k, v in case.params.items()]
    lines += [
        "sweep:",
        f"  num_samples: {case.trials}",
        "  max_concurrent_trials: 1",
        f"  grace_period: {case.grace_period}",
        "  reduction_factor: 3",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class SweepFigures:
    """What one benchmark sweep measured."""

    case: str
    wall_s: float
    tune_s: float
    trials: list[dict[str, Any]] = field(default_factory=list)


def run_case(case: SweepCase, work: Path) -> SweepFigures:
    """Run the case's sweep quietly; per trial its time.* figures and MLflow run wall."""
    from mlflow import MlflowClient

    from asd.data.synth.tree import synthesize
    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings
    from asd.tracking import default_tracking_uri

    data = synthesize(work / "data", **case.data)
    settings = SweepSettings(
        space=write_space(case, work / f"{case.name}.yaml"),
        data=data,
        workdir=work,
        name=f"bench-{case.name}",
        holdout_machines=case.holdout,
        device="cpu",
        system_metrics_s=10.0,
    )
    with (
        open(work / "sweep.log", "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        began = time.perf_counter()
        result = run_sweep(settings)
        wall = time.perf_counter() - began
    client = MlflowClient(tracking_uri=default_tracking_uri(work.resolve()))
    figures = SweepFigures(case.name, wall, result.phases.get("tune", wall))
    for _, row in result.summary.iterrows():
        run = client.get_run(str(row["mlflow_run_id"]))
        m, info = run.data.metrics, run.info
        run_wall = ((info.end_time or info.start_time) - info.start_time) / 1000.0
        figures.trials.append(
            {
                "trial": row["trial_id"],
                "family": row["family"],
                "status": row["status"],
                "epochs": int(row["epochs"]),
                "run_wall_s": run_wall,
                **{k: float(m.get(f"time.{k}", 0.0)) for k in TIMES},
                "samples_per_epoch": m.get("train.samples_per_s", 0.0)
                * m.get("train.seconds", 0.0),
                "estimate": m.get("val_estimate"),
                "full": m.get("val_hmean") if row["final"] else None,
            }
        )
    return figures


def per_trial_rows(fig: SweepFigures, cores: int) -> tuple[list[str], list[str]]:
    """The case's per-trial table (markdown lines) and its summary lines."""
    head = (
        "| trial | family | status | epochs | train s | validate s | final eval s | "
        "other in-trial s | overhead s | GPU train s | GPU validate+eval s |"
    )
    lines = [head, "|" + "---|" * 11]
    in_trial = sum(sum(t[k] for k in TIMES) for t in fig.trials)
    outside = max(fig.tune_s - in_trial, 0.0) / max(len(fig.trials), 1)
    sums = dict.fromkeys(("train", "validate", "final", "other", "gpu_train", "gpu_eval"), 0.0)
    for t in fig.trials:
        other = t["setup_s"] + t["log_s"] + t["checkpoint_s"]
        gpu_train = t["epochs"] * t["samples_per_epoch"] / H100_TRAIN_SAMPLES_PER_S
        gpu_eval = (t["validate_s"] + t["final_s"]) * cores / GPU_NODE_CORES
        for key, value in (
            ("train", t["train_s"]),
            ("validate", t["validate_s"]),
            ("final", t["final_s"]),
            ("other", other),
            ("gpu_train", gpu_train),
            ("gpu_eval", gpu_eval),
        ):
            sums[key] += value
        cells = [
            t["trial"],
            t["family"],
            t["status"],
            t["epochs"],
            t["train_s"],
            t["validate_s"],
            t["final_s"],
            other,
            outside,
            gpu_train,
            gpu_eval,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    n = max(len(fig.trials), 1)
    trained = sums["train"] or float("nan")
    summary = [
        f"{fig.case}: {len(fig.trials)} trials, sweep wall {fig.wall_s:.1f} s, Tune phase "
        f"{fig.tune_s:.1f} s; summed training {sums['train']:.1f} s, per-epoch validation "
        f"{sums['validate']:.1f} s, final evaluation {sums['final']:.1f} s, other in-trial "
        f"{sums['other']:.1f} s ({sums['other'] / n:.2f} s per trial), overhead outside the "
        f"trial function {outside:.2f} s per trial",
        f"{fig.case}: validation + evaluation = "
        f"{100 * (sums['validate'] + sums['final']) / trained:.0f} % "
        f"of training here; sweep wall / summed trial time = "
        f"{fig.wall_s / max(in_trial, 1e-9):.2f}",
        f"{fig.case} on a GPU node: training {sums['gpu_train']:.1f} s, validation + evaluation "
        f"{sums['gpu_eval']:.1f} s ({100 * sums['gpu_eval'] / max(sums['gpu_train'], 1e-9):.0f} % "
        f"of training), overhead {outside + sums['other'] / n:.2f} s per trial",
    ]
    return lines, summary


def rank_correlation(figs: list[SweepFigures]) -> str:
    """Spearman of the per-epoch estimate with the full figure over trials that finished."""
    from scipy.stats import spearmanr

    pairs = [
        (t["estimate"], t["full"])
        for f in figs
        for t in f.trials
        if t["estimate"] is not None and t["full"] is not None
    ]
    if len(pairs) < 3:
        return f"rank correlation: {len(pairs)} finished trial(s), too few to rank"
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    gap = statistics.mean(abs(a - b) for a, b in pairs)
    return (
        f"rank correlation (Spearman) of the per-epoch estimate with the full evaluation at "
        f"the last epoch: {rho:.3f} over {len(pairs)} finished trials; mean |difference| "
        f"{100 * gap:.2f} points"
    )


def fixed_costs(work: Path, size: str) -> list[tuple[str, float, str]]:
    """(item, seconds, note) of each per-trial fixed cost, measured one by one."""
    rows = [_imports()]
    rows += _actor()
    rows += _mlflow(work)
    rows += _checkpoints(work, size)
    rows += _artifacts_and_metrics(work)
    return rows


def _imports() -> tuple[str, float, str]:
    """A fresh worker's imports: what an actor pays once (reuse_actors keeps them)."""
    code = "import asd.sweep.trial, ray.tune, mlflow, optuna"
    times = []
    for snippet in ("pass", code):
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", snippet],
            check=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        times.append(time.perf_counter() - began)
    return ("imports in a fresh worker (first trial of an actor)", times[1] - times[0], code)


def _actor() -> list[tuple[str, float, str]]:
    import ray

    try:

        @ray.remote(num_cpus=0)
        class Probe:
            def ping(self) -> int:
                return 1

        began = time.perf_counter()
        probe = Probe.remote()  # type: ignore[attr-defined]
        ray.get(probe.ping.remote())
        start = time.perf_counter() - began
        began = time.perf_counter()
        ray.get(probe.ping.remote())
        reuse = time.perf_counter() - began
    finally:
        ray.kill(probe)
    return [
        ("Ray actor start (a new worker process)", start, "paid once per actor"),
        ("Ray actor reuse (a call on a warm actor)", reuse, "reuse_actors=True: later trials"),
    ]


def _mlflow(work: Path) -> list[tuple[str, float, str]]:
    from asd.config import Config
    from asd.tracking import Tracker, default_tracking_uri

    tracker = Tracker(default_tracking_uri(work / "fixed"), "bench", journal_dir=work / "j")
    parent = tracker.start_sweep("bench", params={"space.x": "uniform[0, 1]"})
    calls: dict[str, list[float]] = {"start_trial": [], "log_metrics": [], "finish": []}
    row = {f"m{i}": float(i) for i in range(60)}
    for trial in range(3):
        began = time.perf_counter()
        run = tracker.start_trial(parent, f"t{trial}", params=Config().to_flat())
        calls["start_trial"].append(time.perf_counter() - began)
        for epoch in range(5):
            began = time.perf_counter()
            tracker.log_metrics(run, row, step=epoch)
            calls["log_metrics"].append(time.perf_counter() - began)
        began = time.perf_counter()
        tracker.finish(run)
        calls["finish"].append(time.perf_counter() - began)
    notes = {
        "start_trial": "MLflow run creation with ~100 params",
        "log_metrics": "one epoch's row (60 metrics), per epoch",
        "finish": "once",
    }
    return [(f"MLflow {k}", statistics.median(v), notes[k]) for k, v in calls.items()]


def _checkpoints(work: Path, size: str) -> list[tuple[str, float, str]]:
    """last.pt of the quick and the paper encoder (model + Adam state) and its copy to storage."""
    import torch

    from asd.model.checkpoint import save_checkpoint
    from asd.model.encoder import Encoder
    from asd.model.schedule import make_scheduler
    from asd.presets import preset

    rows = []
    for name in ("quick", "paper"):
        cfg = preset(name)
        encoder = Encoder(cfg.encoder, 32 if size == "tiny" else cfg.features.n_mels)
        optimizer = torch.optim.Adam(encoder.parameters())
        encoder.embed(torch.zeros(2, encoder.n_mels, 32)).sum().backward()
        optimizer.step()  # Adam state exists, as in a real checkpoint
        scheduler = make_scheduler(optimizer, cfg)
        path = work / f"ckpt-{name}" / "last.pt"
        began = time.perf_counter()
        save_checkpoint(path, encoder, optimizer, scheduler, torch.Generator(), 1, [], cfg)
        save = time.perf_counter() - began
        began = time.perf_counter()
        shutil.copytree(path.parent, work / f"storage-{name}")  # what Tune does with it
        copy = time.perf_counter() - began
        mb = path.stat().st_size / 1e6
        rows += [
            (f"checkpoint write, {name} encoder", save, f"last.pt {mb:.1f} MB"),
            (f"checkpoint copy to Tune storage, {name}", copy, "local folder"),
        ]
    return rows


def _artifacts_and_metrics(work: Path) -> list[tuple[str, float, str]]:
    """The last epoch's artifacts (tables, plots, CSVs) and the system-metrics sampler."""
    import numpy as np
    import pandas as pd

    from asd.config import Config, FeatureConfig
    from asd.detect.detector import evaluate_detector
    from asd.detect.pipeline import save_evaluation
    from asd.features import FeatureSet
    from asd.tracking.system import system_metrics

    rng = np.random.default_rng(0)
    rows, mels = [], []
    for machine in ("fan", "valve"):
        for split, n in (("train", 20), ("test", 20)):
            for i in range(n):
                label = "normal" if split == "train" or i % 2 else "anomaly"
                domain = "source" if (i // 2) % 2 else "target"
                mels.append(rng.normal(size=(16, 20)).astype(np.float32))
                rows.append((f"{machine}_{len(rows)}.wav", machine, 0, domain, split, label))
    index = pd.DataFrame(rows, columns=["clip", "machine", "section", "domain", "split", "label"])
    index["subset"] = "dev_data"
    features = FeatureSet.from_arrays(mels, index, FeatureConfig(n_mels=16))
    cfg = Config().with_overrides({"scoring.family": "reference"})
    evaluation = evaluate_detector(None, features, cfg)
    began = time.perf_counter()
    save_evaluation(evaluation, work / "artifacts")
    save = time.perf_counter() - began
    uri = f"sqlite:///{work / 'sysmetrics.db'}"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("s", str(work / "s-art"))).info.run_id
    began = time.perf_counter()
    with system_metrics(uri, run, 10.0):
        pass
    sampler = time.perf_counter() - began
    return [
        ("final artifacts: tables, plots, CSVs", save, "save_evaluation, 2 machines"),
        ("system metrics sampler start + stop", sampler, "one thread per trial"),
    ]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    return (
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}: {cpu}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, load average "
        f"{[round(v, 2) for v in load]}"
    )


def report(size: str, work: Path) -> str:
    """Run everything at ``size`` in ``work``; the markdown report."""
    import ray

    cores = os.cpu_count() or 1
    # Ray started here, not inside a sweep's redirected output (its log handler keeps that)
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=cores)
    try:
        return _report(size, work, cores)
    finally:
        ray.shutdown()


def _report(size: str, work: Path, cores: int) -> str:
    lines = [f"# Trial costs ({size}) {machine_line()}", ""]
    figs = []
    for case in cases(size):
        print(f"[trial-costs] sweep {case.name} ...", file=sys.stderr, flush=True)
        fig = run_case(case, work / case.name)
        figs.append(fig)
        table, summary = per_trial_rows(fig, cores)
        lines += [f"## {case.name} sweep", "", *table, "", *[f"- {s}" for s in summary], ""]
    lines += [f"- {rank_correlation(figs)}", ""]
    print("[trial-costs] fixed costs ...", file=sys.stderr, flush=True)
    lines += ["## Fixed costs per trial, item by item", "", "| item | s | note |", "|---|---:|---|"]
    lines += [f"| {name} | {value:.3f} | {note} |" for name, value, note in fixed_costs(work, size)]
    lines += [
        "",
        "## GPU-node projection",
        "",
        "```",
        f"gpu_train_s    = epochs x samples_per_epoch / {H100_TRAIN_SAMPLES_PER_S:,.0f}"
        "   (train() samples/s measured on an H100)",
        f"gpu_validate_s = (validate_s + final_eval_s) x {cores} / {GPU_NODE_CORES}"
        f"   (this CPU's measured time, its {cores} cores scaled to the node's {GPU_NODE_CORES})",
        "gpu_trial_s    = gpu_train_s + gpu_validate_s + overhead_s + other in-trial s",
        "```",
        "",
        "Validation and fits are projected at this CPU's rates (embedding stays on the CPU in "
        "the projection too: an upper bound).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        default="small",
        choices=("small", "tiny"),
        help="small: the measurement (minutes); tiny: a smoke run",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write <out>.md")
    parser.add_argument(
        "--latest",
        action="store_true",
        help=f"also put the report into {LATEST.relative_to(REPO)} (replacing its trial-cost "
        "block; the rest of that file is run.py's)",
    )
    args = parser.parse_args(argv)
    if args.latest and not LATEST.is_file():
        parser.error(f"--latest: {LATEST} does not exist (run benchmarks/run.py first)")
    logging.getLogger("ray").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="asd-trial-costs-") as tmp:
        text = report(args.size, Path(tmp))
    if args.out is not None:
        out = args.out.with_suffix(".md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    if args.latest:
        LATEST.write_text(
            splice_trial_costs(LATEST.read_text(), text.replace("# Trial", "## Trial", 1))
        )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
