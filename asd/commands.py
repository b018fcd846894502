"""The platform subcommands (`asd sweep`, `asd promote`, `asd sync`): Ray and MLflow behind them.

Kept apart from cli.py so the core commands never import the sweep stack.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from asd.errors import AsdError


def add_platform_commands(sub: Any) -> None:
    """Register sweep, promote and sync on the CLI's subparsers."""
    sweep = sub.add_parser("sweep", help="search encoder settings with Ray Tune, track in MLflow")
    sweep.add_argument(
        "--space", type=Path, default=Path("search_spaces/smoke.yaml"), help="search space YAML"
    )
    sweep.add_argument(
        "--data", type=Path, help="DCASE tree (default: a synthetic set made on first use)"
    )
    sweep.add_argument("--ground-truth", type=Path, help="eval ground-truth CSV folder")
    sweep.add_argument("--workdir", type=Path, default=Path("asd-work"))
    sweep.add_argument("--name", help="sweep name (default: <space>-<date>-<time>)")
    sweep.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow server (default: $MLFLOW_TRACKING_URI, else a local SQLite store)",
    )
    sweep.add_argument("--experiment", default="asd", help="MLflow experiment")
    sweep.add_argument(
        "--ray-address", help="Ray cluster (default: in-process, or the job's cluster)"
    )
    sweep.add_argument("--storage-path", help="Tune storage (shared on multi-node clusters)")
    sweep.add_argument("--num-samples", type=int, help="trials (default: from the space)")
    sweep.add_argument("--max-concurrent", type=int, help="trials at a time (default: space)")
    sweep.add_argument("--cpus-per-trial", type=float, default=1.0)
    sweep.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions allowed")
    sweep.add_argument(
        "--workers-per-trial",
        type=int,
        default=0,
        help="data-parallel Ray Train workers per trial (default: --gpus-per-trial when > 1)",
    )
    sweep.add_argument("--max-failures", type=int, default=1, help="retries of a failed trial")
    sweep.add_argument(
        "--tune-machines", nargs="+", action="extend", help="machine types the search optimises"
    )
    sweep.add_argument(
        "--holdout-machines",
        nargs="+",
        action="extend",
        default=[],
        help="machine types only the winner sees",
    )
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    sweep.add_argument("--promote", action="store_true", help="promote the winner if it is better")
    sweep.add_argument("--model-name", default="asd-encoder", help="registered model name")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--device", default="auto")
    sweep.add_argument(
        "--epoch-hook",
        metavar="MODULE:FUNCTION",
        help="called as hook(trial_id, epoch, trial_dir) at the start of each epoch's report "
        "in every trial: for fault-injection tests and custom checks",
    )
    sweep.set_defaults(func=cmd_sweep)

    promote = sub.add_parser("promote", help="set alias 'champion' if a version beats it")
    promote.add_argument("--model-name", default="asd-encoder")
    promote.add_argument("--version", required=True, help="model version to promote")
    promote.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow (default: $MLFLOW_TRACKING_URI, else the local store in --workdir)",
    )
    promote.add_argument("--workdir", type=Path, default=Path("asd-work"))
    promote.set_defaults(func=cmd_promote)

    sync = sub.add_parser("sync", help="replay results kept locally while MLflow was down")
    sync.add_argument("--workdir", type=Path, default=Path("asd-work"))
    sync.add_argument("--name", help="only this sweep's journal")
    sync.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    sync.set_defaults(func=cmd_sync)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run or resume a sweep and print its summary."""
    from asd.sweep.runner import SweepSettings, run_sweep
    from asd.sweep.summary import format_summary

    settings = SweepSettings(
        space=args.space,
        data=args.data,
        workdir=args.workdir,
        name=args.name,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        ray_address=args.ray_address,
        storage_path=args.storage_path,
        num_samples=args.num_samples,
        max_concurrent_trials=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        workers_per_trial=args.workers_per_trial,
        max_failures=args.max_failures,
        tune_machines=tuple(args.tune_machines) if args.tune_machines else None,
        holdout_machines=tuple(args.holdout_machines),
        resume=args.resume,
        promote=args.promote,
        model_name=args.model_name,
        seed=args.seed,
        device=args.device,
        ground_truth=args.ground_truth,
        epoch_hook=args.epoch_hook,
    )
    result = run_sweep(settings)
    print(format_summary(result))
    return 0


def _tracking_uri(args: argparse.Namespace) -> str:
    """The store promote and sync read: it must exist (MLflow would create an empty one)."""
    from asd.tracking import default_tracking_uri
    from asd.tracking.uri import check_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(Path(args.workdir).resolve())
    check_tracking_uri(uri, must_exist=True)
    return uri


def cmd_promote(args: argparse.Namespace) -> int:
    """Promote a registered version only if it beats the champion on comparable data."""
    from asd.registry import promote

    decision = promote(_tracking_uri(args), args.model_name, str(args.version))
    print(decision.reason)
    return 0 if decision.promoted else 1


def cmd_sync(args: argparse.Namespace) -> int:
    """Replay journalled MLflow writes that could not reach the server."""
    from asd.sweep.checks import check_name
    from asd.tracking import sync_journal

    if args.name:
        check_name(args.name)
    root = Path(args.workdir) / "journal"
    folders = [root / args.name] if args.name else sorted(p for p in root.glob("*") if p.is_dir())
    if not folders or not all(f.exists() for f in folders):
        raise AsdError(f"no journal to sync in {root}")
    uri = _tracking_uri(args)
    for folder in folders:
        report = sync_journal(folder, uri)
        print(f"{folder.name}: {report}")
    return 0
