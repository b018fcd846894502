"""Benchmarks of the asd training pipeline: one table with every figure and the machine.

    python benchmarks/run.py                      # full run on this machine
    python benchmarks/run.py --quick              # small sizes (the smoke run)
    python benchmarks/run.py --device cuda        # on a GPU machine
    python benchmarks/run.py --sections model,step --out /tmp/bench

A thin driver: each section is a module of ``benchmarks/`` with ``section(bench) ->
list[Row]`` that times asd's own functions (``asd.model.train.make_batch``/``train_step``,
``train()``, ``run_sweep``'s phase timings); ``harness`` holds what they share. Every
section but ``sweep`` needs only torch/numpy/pandas/scikit-learn/soundfile and the asd
core; ``sweep`` needs Ray, Optuna and MLflow and is skipped with a note without them.
See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: import the repository, not benchmarks/ itself
    sys.path[0] = str(REPO)

import torch  # noqa: E402

from asd.model.train import resolve_device  # noqa: E402
from benchmarks import (  # noqa: E402
    augment,
    compiled,
    epoch,
    features,
    model,
    scale,
    scoring,
    serving,
    step,
    sweep,
)
from benchmarks.harness import (  # noqa: E402
    H100_TRAIN_SAMPLES_PER_S,
    Bench,
    Row,
    one_line,
    sizes_for,
    trial_costs_block,
)

__all__ = ["Bench", "main", "parse_args", "sizes_for", "torch"]

SECTIONS: dict[str, ModuleType] = {
    "model": model,
    "step": step,
    "epoch": epoch,
    "features": features,
    "augment": augment,
    "scoring": scoring,
    "serving": serving,
    "sweep": sweep,
    "compile": compiled,
    "scale": scale,
}
"""Section name -> its module (``section(bench) -> list[Row]``), in the order they run."""


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    with contextlib.suppress(OSError):
        info["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def to_markdown(info: dict[str, Any], rows: list[Row], notes: list[str]) -> str:
    """The one table, with the machine above it and the projection lines under it."""
    head = (
        f"asd benchmark ({info.get('mode')}) {info['date']}: {info['cpu']}, "
        f"{info['cores']} cores ({info['torch_threads']} torch threads), torch "
        f"{info['torch']}, device {info['device']}"
        + (f" ({info['cuda_device']})" if info.get("cuda_device") else "")
        + f", load average {info.get('load_average_start')} -> "
        f"{info.get('load_average_end')}, {info.get('total_s', 0):.0f} s"
    )
    lines = [head, "", "| section | figure | value | unit | note |", "|---|---|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.section} | {r.name} | {_fmt(r.value)} | {r.unit} | {r.note.replace('|', '/')} |"
        )
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def run(bench: Bench, sections: list[str]) -> tuple[dict[str, Any], list[Row]]:
    """Run ``sections`` in order; a failing section becomes an error row, the rest go on."""
    info = machine_info(bench.device)
    info["mode"] = bench.sizes.mode
    rows: list[Row] = []
    began = time.perf_counter()
    for name in sections:
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            rows += SECTIONS[name].section(bench)
        except Exception as exc:
            traceback.print_exc()
            rows.append(Row(name, "error", None, "", one_line(exc)))
        print(
            f"[bench] {name} done in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    info["total_s"] = time.perf_counter() - began
    with contextlib.suppress(OSError):
        info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return info, rows


def write(out: Path, info: dict[str, Any], rows: list[Row], notes: list[str]) -> str:
    """Write ``<out>.md`` and ``<out>.json``; returns the markdown."""
    text = to_markdown(info, rows, notes)
    out = out.with_suffix("") if out.suffix in (".md", ".json") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = out.with_suffix(".md")
    kept = trial_costs_block(previous.read_text()) if previous.is_file() else None
    if kept is not None:  # measured by its own run (trial_costs.py --latest): kept as it was
        text = f"{text.rstrip()}\n\n{kept}\n"
    out.with_suffix(".md").write_text(text)
    payload = {"machine": info, "rows": [asdict(r) for r in rows], "notes": notes}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (< 2 min on a 2-core CPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--sections",
        default=None,
        help=f"comma-separated subset of: {','.join(SECTIONS)} (default: all; on CPU all but "
        "compile, whose inductor C++ build takes many minutes there)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results" / "latest",
        help="writes <out>.md and <out>.json",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the model-only step under torch.compile on CPU (on CUDA it always runs)",
    )
    p.add_argument(
        "--gpu-samples-per-s",
        type=float,
        default=None,
        help="GPU train() samples/s for the projection when no GPU is here "
        f"(default: the H100's {H100_TRAIN_SAMPLES_PER_S:,.0f}, measured 2026-11)",
    )
    p.add_argument(
        "--sklearn-mcd-sections",
        type=int,
        default=None,
        help="sections of the DCASE-size elliptic fit to time with scikit-learn's "
        "EllipticEnvelope (minutes each on a small CPU; 0 skips it; default 1)",
    )
    p.add_argument("--mode", default=None, choices=("full", "quick", "toy"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [s for s in (args.sections or "").split(",") if s and s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    # Local defaults, as the CLI sets them: no Ray token auth, no MLflow telemetry.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmark: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    mode = args.mode or ("quick" if args.quick else "full")
    sizes = sizes_for(mode, device)
    if args.sklearn_mcd_sections is not None:
        sizes = replace(sizes, sklearn_mcd_sections=max(0, args.sklearn_mcd_sections))
    bench = Bench(
        device=device,
        sizes=sizes,
        compile_cpu=args.compile,
        gpu_samples_per_s=args.gpu_samples_per_s,
    )
    default = [name for name in SECTIONS if device.type == "cuda" or name != "compile"]
    info, rows = run(bench, args.sections.split(",") if args.sections else default)
    text = write(args.out, info, rows, bench.notes)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
