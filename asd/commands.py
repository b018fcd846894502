"""The platform subcommands (`asd sweep`, `asd promote`, `asd sync`): Ray and MLflow behind them.

Kept apart from cli.py so the core commands never import the sweep stack.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

from asd.errors import AsdError, redact

SWEEP_EXAMPLES = """examples:
  # the README demo: in-process Ray, a local MLflow store, synthetic data
  asd sweep --space smoke --promote

  # a shipped space on your data, on a running cluster, tracked on an MLflow server
  asd sweep --space default --data /data/dcase2023t2 --ray-address auto \\
      --tracking-uri http://127.0.0.1:5000 --storage-path s3://bucket/sweeps --gpus-per-trial 1
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written; a default shown where there is one (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def add_platform_commands(sub: Any) -> None:
    """Register sweep, promote and sync on the CLI's subparsers."""
    sweep = _add_sweep_parser(sub)
    _add_search_args(sweep)
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


def accept_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` also after the subcommand (``asd sweep --debug``), not only before it.

    The subcommands' copy is SUPPRESSed by default, so it never resets a ``--debug`` given
    before the subcommand.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument(
                    "--debug",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help="show tracebacks and debug logs",
                )
                accept_debug_everywhere(child)


def _add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    """``asd sweep`` and its where-flags: space, data, work folder, MLflow, Ray, storage."""
    sweep = sub.add_parser(
        "sweep",
        help="search encoder settings with Ray Tune, track in MLflow",
        description="Search encoder settings with Ray Tune (Optuna TPE + ASHA). Every trial is\n"
        "an MLflow child run of the sweep's parent run; the winner is registered. Resources\n"
        "and machine groups not given as flags come from the space's sweep: section.",
        epilog=SWEEP_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    sweep.add_argument(
        "--space",
        default="smoke",
        help="search space: a YAML file, or the name of a shipped one (smoke, default, paper)",
    )
    sweep.add_argument(
        "--data", type=Path, help="DCASE tree (default: a synthetic set made on first use)"
    )
    sweep.add_argument("--ground-truth", type=Path, help="eval ground-truth CSV folder")
    sweep.add_argument(
        "--workdir",
        type=Path,
        default=Path("asd-work"),
        help="feature cache, journal, Tune storage; shared by every node on a cluster",
    )
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
    sweep.add_argument(
        "--storage-path",
        help="Tune storage: a folder or a URI such as s3://bucket/prefix, shared on multi-node "
        "clusters (default: <workdir>/ray_results)",
    )
    return sweep


def _add_search_args(sweep: argparse.ArgumentParser) -> None:
    """``asd sweep``'s how-flags: trials, resources, machine groups, output."""
    sweep.add_argument("--num-samples", type=int, help="trials (default: from the space)")
    sweep.add_argument("--max-concurrent", type=int, help="trials at a time (default: space)")
    sweep.add_argument(
        "--cpus-per-trial", type=float, help="CPUs per trial (default: space's sweep:, else 1)"
    )
    sweep.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per trial, fractions allowed (default: space's sweep:, else 0)",
    )
    sweep.add_argument(
        "--workers-per-trial",
        type=int,
        help="data-parallel Ray Train workers per trial (default: space's sweep:, else "
        "--gpus-per-trial when > 1)",
    )
    sweep.add_argument("--max-failures", type=int, default=1, help="retries of a failed trial")
    sweep.add_argument(
        "--tune-machines",
        nargs="+",
        action="extend",
        help="machine types the search optimises (default: space's sweep:, else all)",
    )
    sweep.add_argument(
        "--holdout-machines",
        nargs="+",
        action="extend",
        help="machine types only the winner sees (default: space's sweep:, else none)",
    )
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    sweep.add_argument("--promote", action="store_true", help="promote the winner if it is better")
    sweep.add_argument("--model-name", default="asd-encoder", help="registered model name")
    sweep.add_argument("--seed", type=int, default=0, help="Optuna sampler seed")
    sweep.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    sweep.add_argument(
        "--epoch-hook",
        metavar="MODULE:FUNCTION",
        help="called as hook(trial_id, epoch, trial_dir) at the start of each epoch's report "
        "in every trial: for fault-injection tests and custom checks",
    )
    sweep.add_argument(
        "--system-metrics-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="sample each trial's CPU, memory and GPU use into its MLflow run (0: off)",
    )
    sweep.add_argument(
        "--verbose",
        action="store_true",
        help="Ray Tune's result tables instead of one line per trial event",
    )
    sweep.add_argument(
        "--dashboard",
        action="store_true",
        help="with in-process Ray: start Ray's dashboard on 127.0.0.1 (off by default)",
    )


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
        holdout_machines=tuple(args.holdout_machines) if args.holdout_machines else None,
        resume=args.resume,
        promote=args.promote,
        model_name=args.model_name,
        seed=args.seed,
        device=args.device,
        ground_truth=args.ground_truth,
        epoch_hook=args.epoch_hook,
        system_metrics_s=args.system_metrics_interval,
        verbose=args.verbose,
        dashboard=args.dashboard,
        command=redact(shlex.join(["asd", *getattr(args, "argv", ["sweep"])])),
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
