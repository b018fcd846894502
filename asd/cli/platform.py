"""The platform subcommands (`asd sweep`, `asd promote`, `asd sync`) and the environment.

Kept apart from cli.py so the core commands never import the sweep stack: Ray, Optuna and
MLflow are imported only when a platform command runs. The `asd sweep` flags are generated from
`SweepSettings`: its fields and their docstrings are the one source of each flag's name, type,
default and help. This is the only module that reads settings from the process environment
(:func:`read_environment`; the other commands call it).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import logging
import os
import shlex
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asd.config import DEFAULT_WORKDIR
from asd.errors import AsdError, redact
from asd.sweep.settings import SweepSettings

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    Subparsers = _SubParsersAction[argparse.ArgumentParser]

SWEEP_EXAMPLES = """examples:
  # the README demo: in-process Ray, a local MLflow store, synthetic data
  asd sweep --space smoke --promote

  # a shipped space on your data, on a running cluster, tracked on an MLflow server
  asd sweep --space default --data /data/dcase2023t2 --ray-address auto \\
      --tracking-uri http://127.0.0.1:5000 --storage-path s3://bucket/sweeps --gpus-per-trial 1
"""


SWEEP_FLAGS: dict[str, dict[str, Any]] = {
    "space": {"type": str, "default": "smoke"},  # a file or a shipped name, passed on as given
    "max_concurrent_trials": {"flag": "--max-concurrent", "metavar": "MAX_CONCURRENT"},
    "system_metrics_s": {"flag": "--system-metrics-interval", "metavar": "SECONDS"},
    "epoch_hook": {"metavar": "MODULE:FUNCTION"},
}
"""Where an `asd sweep` flag differs from its field's --name, type or default."""

NOT_FLAGS = ("command",)
"""SweepSettings fields the command fills itself (the command line, for provenance)."""

LOCAL_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # Tune snapshots after every report by design (one per epoch); its warning is noise here.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
"""Set when unset: a cluster or server that needs otherwise sets these itself."""


@dataclass(frozen=True)
class Environment:
    """What the process environment says about where things are."""

    tracking_uri: str | None = None
    """$MLFLOW_TRACKING_URI: the MLflow server when no --tracking-uri is given."""
    data: str | None = None
    """$ASD_DATA: the DCASE tree of a `ray job` sweep (jobs/sweep.py) without --data."""
    workdir: str | None = None
    """$ASD_WORKDIR: the work folder of a `ray job` sweep (jobs/sweep.py) without --workdir."""


def read_environment(env: Mapping[str, str] | None = None) -> Environment:
    """The environment variables asd reads (``os.environ`` unless given)."""
    env = os.environ if env is None else env
    return Environment(
        tracking_uri=env.get("MLFLOW_TRACKING_URI"),
        data=env.get("ASD_DATA"),
        workdir=env.get("ASD_WORKDIR"),
    )


def set_local_defaults() -> None:
    """Apply LOCAL_DEFAULTS to the process environment where nothing is set."""
    for key, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(key, value)


def job_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """`asd sweep` arguments of a `ray job`: its flags plus data and work folder from the env.

    The job's working directory is a temporary upload, so the work folder defaults to
    ~/asd-work on the head node rather than ./asd-work.
    """
    found = read_environment(env)
    args = ["sweep", *argv]
    if "--data" not in argv and found.data:
        args += ["--data", found.data]
    if "--workdir" not in argv:
        args += ["--workdir", found.workdir or str(Path.home() / DEFAULT_WORKDIR)]
    return args


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written; a default shown where there is one (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        hidden = action.default is None or action.default is False
        if hidden or action.default == argparse.SUPPRESS or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def add_platform_commands(sub: Subparsers) -> None:
    """Register sweep, promote and sync on the CLI's subparsers."""
    tracking_uri = read_environment().tracking_uri
    _add_sweep_parser(sub, tracking_uri)
    _add_promote_parser(sub, tracking_uri)
    sync = sub.add_parser("sync", help="replay results kept locally while MLflow was down")
    sync.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    sync.add_argument("--name", help="only this sweep's journal")
    sync.add_argument("--tracking-uri", default=tracking_uri)
    sync.set_defaults(func=cmd_sync)


def _add_promote_parser(sub: Subparsers, tracking_uri: str | None) -> None:
    promote = sub.add_parser("promote", help="set alias 'champion' if a version beats it")
    promote.add_argument("--model-name", default="asd-encoder")
    promote.add_argument("--version", required=True, help="model version to promote")
    promote.add_argument(
        "--tracking-uri",
        default=tracking_uri,
        help="MLflow (default: $MLFLOW_TRACKING_URI, else the local store in --workdir)",
    )
    promote.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    promote.set_defaults(func=cmd_promote)


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


def _add_sweep_parser(sub: Subparsers, tracking_uri: str | None) -> None:
    """``asd sweep``: one flag per SweepSettings field (see SWEEP_FLAGS for the exceptions)."""
    sweep = sub.add_parser(
        "sweep",
        help="search encoder settings with Ray Tune, track in MLflow",
        description="Search encoder settings with Ray Tune (Optuna TPE + ASHA). Every trial is\n"
        "an MLflow child run of the sweep's parent run; the winner is registered. Resources\n"
        "and machine groups not given as flags come from the space's sweep: section.",
        epilog=SWEEP_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    flags = {**SWEEP_FLAGS, "tracking_uri": {"default": tracking_uri}}
    add_settings_flags(sweep, SweepSettings, flags, skip=NOT_FLAGS)
    sweep.set_defaults(func=cmd_sweep)


def add_settings_flags(
    parser: argparse.ArgumentParser,
    settings: type,
    flags: Mapping[str, Mapping[str, Any]],
    skip: Sequence[str] = (),
) -> None:
    """One flag per field of a settings dataclass, so the dataclass is the one source of truth.

    Each flag is ``--field-name``, typed from the field's annotation, with the field's default
    and its docstring as help; ``flags[field]`` overrides any of these (``flag``: the name).
    """
    docs = field_docs(settings)
    hints = typing.get_type_hints(settings)
    for item in fields(settings):
        if item.name in skip:
            continue
        default = None if item.default is MISSING else item.default
        options: dict[str, Any] = {
            "dest": item.name,
            "default": default,
            "help": flag_help(docs[item.name]),
            **argparse_kind(hints[item.name], default),
        }
        options.update(flags.get(item.name, {}))
        flag = options.pop("flag", "--" + item.name.replace("_", "-"))
        parser.add_argument(flag, **options)


def field_docs(settings: type) -> dict[str, str]:
    """Each field's docstring: the string literal right below it in the class's source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(settings)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def flag_help(doc: str) -> str:
    """A field docstring as one line of argparse help (no RST quotes, no final period)."""
    text = " ".join(doc.split()).replace("``", "").replace("%", "%%")
    return text if text.endswith("...") else text.removesuffix(".")


def argparse_kind(hint: Any, default: object) -> dict[str, Any]:
    """The argparse options for a field type: ``X | None`` as X, bools as flags, tuples as lists."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction if default else "store_true"}
    if typing.get_origin(hint) is tuple:
        return {"type": typing.get_args(hint)[0], "nargs": "+", "action": "extend"}
    return {"type": hint}


def sweep_settings(args: argparse.Namespace) -> SweepSettings:
    """The SweepSettings `asd sweep` parsed (lists back to tuples), with its command line."""
    values: dict[str, Any] = {
        item.name: _field_value(getattr(args, item.name))
        for item in fields(SweepSettings)
        if item.name not in NOT_FLAGS
    }
    command = redact(shlex.join(["asd", *getattr(args, "argv", ["sweep"])]))
    return SweepSettings(**values, command=command)


def _field_value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run or resume a sweep and print its summary."""
    from asd.sweep.runner import run_sweep
    from asd.sweep.summary import format_summary

    settings = sweep_settings(args)
    if not settings.verbose and not getattr(args, "debug", False):
        quiet_platform_logs()
    result = run_sweep(settings)
    print(format_summary(result))
    return 0


QUIET_LOGGERS = {"mlflow": logging.ERROR, "optuna": logging.WARNING, "alembic": logging.WARNING}
"""The default `asd sweep` console: a line per trial event, not these libraries' INFO lines."""

QUIET_ENVIRONMENT = {
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's new console prints its tables even at verbose=0
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "ERROR",  # read when MLflow is imported, here and in Ray's workers
}
"""Set where unset for a sweep without --verbose."""


def quiet_platform_logs() -> None:
    """Keep Ray Tune, MLflow and Optuna to warnings on the console (``--verbose`` does not)."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def _tracking_uri(args: argparse.Namespace) -> str:
    """The store promote and sync read: it must exist (MLflow would create an empty one)."""
    from asd.tracking import default_tracking_uri
    from asd.tracking.uri import check_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(Path(args.workdir).resolve())
    check_tracking_uri(uri, must_exist=True)
    return uri


def cmd_promote(args: argparse.Namespace) -> int:
    """Promote a registered version only if it beats the champion on comparable data."""
    from asd.serve.promotion import promote

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
