"""Detection quality: the untrained references beside every learned detector, tuned vs held-out.

    python benchmarks/quality.py                     # CPU size (see --help), tens of minutes
    python benchmarks/quality.py --size dcase --device cuda   # the issue's DCASE shape, on a GPU
    python benchmarks/quality.py --rows reference-mean,quick --out /tmp/quality

One table on `asd data synth` data (spectral *and* temporal anomalies): the machine types are
split into a tuned group and a held-out group; the sweep only ever sees the tuned group's test
labels, every other row is scored on both groups. Rows: the references (clip mean; clip mean
+ std of the log-mel), each temporal pooling alone, TWFR-GMM, label-free ensembles, the
``quick`` preset and its encoder with its poolings, the champion of a small real ``asd sweep``
and the paper preset. Columns: hmean per scorer
for each group, wall time, the machine. A row whose lever the installed ``asd`` does not have
prints ``n/a`` and why. Every figure comes from the project's own public functions
(``asd.data.synth.tree.synthesize``, ``asd.detect.pipeline.train_encoder``,
``asd.detect.detector.evaluate_detector``,
``asd.sweep.runner.run_sweep``); nothing is re-implemented here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asd.config import Config
from asd.data.index import index_dataset
from asd.data.synth.tree import synthesize
from asd.detect import pipeline
from asd.detect.detector import evaluate_detector, machine_comparison
from asd.errors import AsdError
from asd.features import FeatureSet, extract_features
from asd.presets import preset

REPO = Path(__file__).resolve().parents[1]
TUNED = ("ToyCar", "bearing", "fan", "slider", "valve")
HELD_OUT = ("ToyTrain", "gearbox")
"""Held out: one machine with temporal anomalies of each style (rail clacks, gear mesh)."""

SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(train_source=20, train_target=2, test_per_domain=6, seconds=2.0),
    "cpu": dict(train_source=45, train_target=5, test_per_domain=10, seconds=4.0),
    "dcase": dict(train_source=100, train_target=10, test_per_domain=50, seconds=10.0),
}
"""Data sizes per machine type: 'dcase' is the issue's shape, 'cpu' what a 2-core CPU allows."""


@dataclass(frozen=True)
class Row:
    """One detector of the table."""

    name: str
    kind: str
    """'untrained' (log-mel members only), 'encoder' (trained here) or 'sweep' (a real sweep)."""
    base: str = "quick"
    """Preset the overrides apply to."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config keys that make this row; an unknown key makes the row 'n/a'."""
    note: str = ""


def _untrained(pooling: str, **scoring: Any) -> dict[str, Any]:
    """Overrides of an untrained log-mel detector pooled by ``pooling``."""
    return {"scoring.family": "reference", "scoring.reference": pooling} | {
        f"scoring.{k}": v for k, v in scoring.items()
    }


def _ensemble(*members: str, combine: str = "max", **scoring: Any) -> dict[str, Any]:
    """Overrides of an ensemble of ``members`` combined by ``combine`` of z."""
    return {
        "scoring.family": "ensemble",
        "scoring.members": list(members),
        "scoring.combine": combine,
    } | {f"scoring.{k}": v for k, v in scoring.items()}


MEANSTD_MAX = ("logmel/meanstd", "logmel/max")
QUICK_ENCODER = {"scoring.family": "encoder", "scoring.pool": "own"}
"""The quick preset's encoder alone (the preset's own detector is an ensemble)."""

ROWS = (
    Row("reference-mean", "untrained", "paper", _untrained("mean"), "clip mean"),
    Row("reference-meanstd", "untrained", "paper", _untrained("meanstd"), "clip mean+std"),
    Row("pool-max", "untrained", "paper", _untrained("max"), "per-band max over time"),
    Row("pool-p95", "untrained", "paper", _untrained("p95"), "95th percentile over time"),
    Row("pool-gwrp0.5", "untrained", "paper", _untrained("gwrp0.5"), "GWRP, decay 0.5"),
    Row("pool-gwrp0.9", "untrained", "paper", _untrained("gwrp0.9"), "GWRP, decay 0.9"),
    Row("pool-mean+max", "untrained", "paper", _untrained("mean+max"), "mean and max, one vector"),
    Row("pool-max-gmm", "untrained", "paper", _untrained("max", estimator="gmm"), "max, GMM"),
    Row("twfr-gmm", "untrained", "twfr-gmm", {}, "TWFR-GMM, published per-machine decays"),
    Row("ens-meanstd+max", "untrained", "paper", _ensemble(*MEANSTD_MAX), "max of z"),
    Row(
        "ens-meanstd+max-mean",
        "untrained",
        "paper",
        _ensemble(*MEANSTD_MAX, combine="mean"),
        "mean of z",
    ),
    Row(
        "ens-meanstd+gwrp0.5+max",
        "untrained",
        "paper",
        _ensemble("logmel/meanstd", "logmel/gwrp0.5", "logmel/max"),
        "max of z",
    ),
    Row(
        "ens-mean+meanstd+max",
        "untrained",
        "paper",
        _ensemble("logmel/mean", "logmel/meanstd", "logmel/max"),
        "max of z",
    ),
    Row(
        "ens-meanstd+max/gmm",
        "untrained",
        "paper",
        _ensemble("logmel/meanstd", "logmel/max/gmm"),
        "max of z, max pooled member scored by GMM",
    ),
    Row("quick", "encoder", "quick", {}, "the quick preset as shipped"),
    Row("quick-encoder", "encoder", "quick", QUICK_ENCODER, "quick's encoder alone, own pooling"),
    Row(
        "quick-encoder-max",
        "encoder",
        "quick",
        {**QUICK_ENCODER, "scoring.pool": "max"},
        "quick's encoder frames, max over time",
    ),
    Row(
        "quick-ens+encoder",
        "encoder",
        "quick",
        _ensemble(*MEANSTD_MAX, "encoder/own"),
        "max of z: mean+std, max, encoder",
    ),
    Row(
        "quick-ens+encoder-max",
        "encoder",
        "quick",
        _ensemble(*MEANSTD_MAX, "encoder/max"),
        "max of z: mean+std, max, encoder frames' max",
    ),
    Row("sweep-champion", "sweep", "quick", {}, "best of a small real asd sweep"),
    Row("paper", "encoder", "paper", {}, "paper preset (--paper-epochs caps its 40 epochs)"),
)
"""In order of importance: a run cut short still has the references and the main detectors."""


@dataclass
class Result:
    """What one row measured: hmean per scorer for each group, or why it is missing."""

    row: Row
    tuned: dict[str, float] = field(default_factory=dict)
    held_out: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    cpu_s: float | None = None
    """CPU seconds of this process (all its threads): comparable across a shared machine."""
    missing: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- measuring


class Bench:
    """Data, features and trained encoders shared between rows (each trained once)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.root = _data(self.out, args)
        self.index = index_dataset(self.root)
        self._features: dict[str, FeatureSet] = {}

    def features(self, cfg: Config) -> FeatureSet:
        """Log-mels for ``cfg.features`` (cached on disk by the project's own cache)."""
        key = cfg.features.key()
        if key not in self._features:
            self._features[key] = extract_features(
                self.index, cfg.features, self.out / "features", progress=False
            )
        return self._features[key]

    def encoder(self, cfg: Config) -> tuple[Any, float]:
        """(encoder, training seconds) for ``cfg``; rows that differ only in scoring share one.

        Trained encoders are kept in ``<out>/encoders/`` (the project's own encoder files),
        keyed by the non-default, non-scoring settings, so a rerun only trains what is new.
        """
        from asd.model.encoder import load_encoder, save_encoder

        defaults = Config().to_flat()
        flat = {
            k: v
            for k, v in cfg.to_flat().items()
            if not k.startswith("scoring.") and v != defaults.get(k)
        }
        blob = json.dumps([self.root.name, flat], sort_keys=True, default=str).encode()
        path = self.out / "encoders" / f"{hashlib.sha256(blob).hexdigest()[:16]}.pt"
        if path.is_file():
            encoder, _, extra = load_encoder(path)
            return encoder, float(extra.get("train_s", float("nan")))
        start = time.monotonic()
        trained = pipeline.train_encoder(
            cfg, self.features(cfg), device=self.args.device, progress=self.args.progress
        )
        train_s = time.monotonic() - start
        save_encoder(trained.encoder, path, cfg, extra={"train_s": train_s})
        return trained.encoder, train_s


def config_for(row: Row, args: argparse.Namespace) -> Config:
    """The row's config, or AsdError when this asd lacks the preset or a lever's key."""
    cfg = preset(row.base).with_overrides(row.overrides)
    if row.name == "paper" and args.paper_epochs:
        cfg = cfg.with_overrides({"train.epochs": args.paper_epochs})
    if row.name == "paper" and args.device == "cpu" and not args.paper_on_cpu:
        raise AsdError(
            "the paper preset (ResNet-18, 10 s crops, 6 views, batch 48) takes hours per epoch "
            "on a shared 2-core CPU: run on a GPU, or pass --paper-on-cpu"
        )
    return cfg


def hmeans(evaluation: Any) -> dict[str, float]:
    """Official hmean per scorer of an Evaluation (companions such as fusion included)."""
    out = {
        name: res.summary.get("hmean", float("nan"))
        for name, res in evaluation.by_estimator.items()
    }
    return {k: float(v) for k, v in out.items()}


def measure_untrained(bench: Bench, row: Row, cfg: Config) -> Result:
    """An untrained log-mel detector (pooling, scorer, ensemble), on both groups."""
    start = time.monotonic()
    features = bench.features(cfg)
    result = Result(row)
    for group, machines in (("tuned", bench.args.tuned), ("held_out", bench.args.held_out)):
        evaluation = evaluate_detector(None, features, cfg, machines=machines, companions=False)
        setattr(result, group, hmeans(evaluation))
        result.detail[f"{group}.machines"] = _per_machine(evaluation, cfg)
    result.wall_s = time.monotonic() - start
    return result


def measure_encoder(bench: Bench, row: Row, cfg: Config) -> Result:
    """Train (or reuse) the row's encoder on every machine's normal clips; score both groups."""
    start = time.monotonic()
    encoder, train_s = bench.encoder(cfg)
    features = bench.features(cfg)
    result = Result(row, detail={"train_s": round(train_s, 1)})
    for group, machines in (("tuned", bench.args.tuned), ("held_out", bench.args.held_out)):
        evaluation = evaluate_detector(
            encoder, features, cfg, machines=machines, device=bench.args.device
        )
        setattr(result, group, hmeans(evaluation))
        result.detail[f"{group}.machines"] = _per_machine(evaluation, cfg)
        for name, companion in evaluation.companions.items():
            result.detail[f"{group}.{name}"] = {
                k: round(100 * v, 1) for k, v in hmeans(companion).items()
            }
    result.wall_s = time.monotonic() - start  # a shared encoder's training is not counted twice
    return result


def _per_machine(evaluation: Any, cfg: Config) -> dict[str, float]:
    """hmean % per machine type of the detector, for the row's own scorer."""
    table = machine_comparison(evaluation, cfg.scoring.estimator)
    return {} if table.empty else {m: float(v) for m, v in table["detector"].items()}


def measure_sweep(bench: Bench, row: Row, cfg: Config) -> Result:
    """A small real sweep on the tuned group; its champion scored on the held-out group."""
    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings

    start = time.monotonic()
    space = bench.out / "quality_space.yaml"
    space.write_text(_space_yaml(bench.args))
    swept = run_sweep(
        SweepSettings(
            space=space,
            data=bench.root,
            workdir=bench.out / "sweep",
            name=f"quality-{int(time.time())}",
            tune_machines=tuple(bench.args.tuned),
            holdout_machines=tuple(bench.args.held_out),
            device=bench.args.device,
            max_concurrent_trials=1,
            cpus_per_trial=float(bench.args.threads),
        )
    )
    result = Result(row, wall_s=time.monotonic() - start)
    for group, scores in (("tuned", swept.tune_scores), ("held_out", swept.holdout_scores)):
        by_scorer = {
            k.split(".")[0]: v
            for k, v in scores.items()
            if k.count(".") == 1 and k.endswith(".hmean")
        }
        setattr(result, group, by_scorer)
        for key, value in scores.items():  # companions: reference.ml.hmean, encoder.ml.hmean
            if key.count(".") == 2:
                result.detail[f"{group}.{key}"] = round(100 * value, 1)
    summary = swept.summary
    if swept.best_trial_id is not None:
        chosen = summary[summary["trial_id"] == swept.best_trial_id].iloc[0]
        result.detail["champion"] = {
            k.removeprefix("param."): chosen[k] for k in summary.columns if k.startswith("param.")
        }
    result.detail["family"] = getattr(swept, "family", "encoder")
    result.detail["trials"] = int(len(summary))
    return result


def _space_yaml(args: argparse.Namespace) -> str:
    """The sweep's search space: the quick preset with its main levers searchable."""
    spec = json.loads(args.sweep_params)
    lines = ["description: quality benchmark sweep", "base: quick"]
    if args.sweep_epochs:
        lines += ["fixed:", f"  train.epochs: {args.sweep_epochs}"]
    lines += ["params:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in spec.items()]
    lines += [
        "sweep:",
        f"  num_samples: {args.sweep_trials}",
        "  max_concurrent_trials: 1",
        f"  grace_period: {args.sweep_epochs or preset('quick').train.epochs}",  # no early stop
        "  reduction_factor: 2",
    ]
    return "\n".join(lines) + "\n"


SWEEP_PARAMS = {
    "scoring.family": {"choice": ["reference", "ensemble"]},
    "scoring.reference": {"choice": ["mean", "meanstd", "max", "p95", "gwrp0.5", "mean+max"]},
    "scoring.members": {
        "choice": [
            "logmel/meanstd,logmel/max",
            "logmel/meanstd,logmel/gwrp0.5,logmel/max",
            "logmel/meanstd,logmel/max/gmm",
        ]
    },
    "scoring.combine": {"choice": ["max", "mean"]},
}
"""What the benchmark's sweep searches: the default space's untrained detector choices."""


MEASURE: dict[str, Callable[[Bench, Row, Config], Result]] = {
    "untrained": measure_untrained,
    "encoder": measure_encoder,
    "sweep": measure_sweep,
}


def run_row(bench: Bench, row: Row) -> Result:
    """One row, or 'n/a' with the reason when this asd lacks what it needs."""
    try:
        cfg = config_for(row, bench.args)
    except AsdError as exc:
        missing = ", ".join(k for k in row.overrides if k in str(exc)) or str(exc).splitlines()[0]
        if row.name == "paper":
            missing = str(exc)
        return Result(row, missing=f"n/a in this asd: {missing}")
    cpu = time.process_time()
    try:
        result = MEASURE[row.kind](bench, row, cfg)
    except ImportError as exc:
        return Result(row, missing=f"not installed: {exc}")
    result.cpu_s = time.process_time() - cpu
    return result


# --------------------------------------------------------------------------- reporting


def machine() -> str:
    """Where the figures were measured: they mean nothing without it."""
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.node()} | {cpu}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()} | {gpu} | torch {torch.__version__}"
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def table(results: list[Result], scorers: list[str]) -> str:
    """The markdown table: hmean (%) per scorer for the tuned and the held-out group."""
    head = ["row"] + [f"tuned {s}" for s in scorers] + [f"held-out {s}" for s in scorers]
    head += ["wall s", "cpu s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.row.name]
        for group in (r.tuned, r.held_out):
            cells += [_pct(group.get(s)) if not r.missing else "n/a" for s in scorers]
        cells.append("n/a" if r.wall_s is None else f"{r.wall_s:.0f}")
        cells.append("n/a" if r.cpu_s is None else f"{r.cpu_s:.0f}")
        cells.append(r.missing or r.row.note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: list[Result], args: argparse.Namespace, wall_s: float) -> str:
    """Table plus the data size, groups and machine, as printed and written to the out folder."""
    scorers: list[str] = []
    for r in results:
        for s in [*r.tuned, *r.held_out]:
            if s not in scorers:
                scorers.append(s)
    size = SIZES[args.size]
    refs = [r for r in results if r.row.name.startswith("reference-") and not r.missing]
    lines = [
        f"# asd detection quality ({args.size} size; official hmean in %)",
        "",
        f"data: asd data synth seed {args.seed}, per machine type {size['train_source']} source"
        f" + {size['train_target']} target train clips, {size['test_per_domain']} normal +"
        f" {size['test_per_domain']} anomalous test clips per domain, {size['seconds']} s clips;"
        " spectral and temporal anomalies",
        f"tuned group: {', '.join(args.tuned)}; held-out group: {', '.join(args.held_out)}",
        f"machine: {machine()}",
        f"total wall time: {wall_s:.0f} s (cpu s: this process's CPU time, all threads; a"
        " sweep's Ray workers are not in it)",
        "",
        table(results, scorers),
    ]
    if refs:
        best = max(max(r.held_out.values(), default=float("nan")) for r in refs)
        lines += ["", f"stronger reference on the held-out group: {_pct(best)} %"]
    details = {r.row.name: r.detail for r in results if r.detail}
    if details:
        lines += ["", "details: " + json.dumps(details, default=str)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _data(out: Path, args: argparse.Namespace) -> Path:
    """The synthetic tree for this size and seed, written once (synth is deterministic)."""
    root = out / f"data-{args.size}-seed{args.seed}"
    if not (root / "dev_data").exists():
        print(f"writing synthetic data to {root} ...", flush=True)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            synthesize(Path(tmp) / "tree", seed=args.seed, **SIZES[args.size])
            (Path(tmp) / "tree").rename(root)
    return root


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--rows", help="comma-separated row names (default: all)")
    parser.add_argument("--out", default="asd-work/quality", help="data, features, results")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tuned", nargs="+", default=list(TUNED))
    parser.add_argument("--held-out", nargs="+", default=list(HELD_OUT))
    parser.add_argument("--paper-epochs", type=int, default=0, help="cap (0: the paper's 40)")
    parser.add_argument("--paper-on-cpu", action="store_true", help="train the paper row on CPU")
    parser.add_argument("--sweep-trials", type=int, default=10)
    parser.add_argument("--sweep-epochs", type=int, default=0, help="0: the quick preset's")
    parser.add_argument(
        "--sweep-params",
        default=json.dumps(SWEEP_PARAMS),
        help="JSON of the sweep's searched params (search-space syntax; default: the default "
        "space's detector choices without training, which a 2-core CPU affords)",
    )
    parser.add_argument("--progress", action="store_true", help="one line per training epoch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.rows.split(",")) if args.rows else {r.name for r in ROWS}
    unknown = wanted - {r.name for r in ROWS}
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(sorted(unknown))}")
    start = time.monotonic()
    bench = Bench(args)
    results: list[Result] = []
    path = out / f"quality-{args.size}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    for row in (r for r in ROWS if r.name in wanted):
        print(f"[{time.monotonic() - start:6.0f} s] {row.name} ...", flush=True)
        result = run_row(bench, row)
        print(
            f"[{time.monotonic() - start:6.0f} s] {row.name}: tuned {result.tuned} "
            f"held-out {result.held_out} {result.missing}",
            flush=True,
        )
        results.append(result)
        # Written after every row: a run cut short still leaves every finished figure.
        path.write_text(report(results, args, time.monotonic() - start) + "\n")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
