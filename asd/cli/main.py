"""`asd`: the command line, the one place that reads argv.

The environment is read by :func:`asd.cli.platform.read_environment` (called from here);
relative paths such as the default work folder are taken from the cwd here.

Every AsdError is printed as one line (``asd: ...``) with exit code 2; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from asd import __version__
from asd.cli.data import add_data_parser
from asd.cli.detector import (
    add_detector_parser,
    evaluate_with_model,
    score_with_model,
    wav_paths,
)
from asd.cli.platform import (
    accept_debug_everywhere,
    add_platform_commands,
    read_environment,
    set_local_defaults,
)
from asd.cli.report import format_evaluation, format_machines
from asd.cli.runfolder import run_folder
from asd.config import DEFAULT_WORKDIR, ESTIMATORS, SCORERS, Config, FeatureConfig
from asd.data.fingerprint import STORE_NAME
from asd.data.index import fingerprint
from asd.data.layouts import index_data
from asd.detect.detector import evaluate_detector, format_versus
from asd.detect.pipeline import (
    other_machine_notes,
    save_evaluation,
    score_new_clips,
    train_encoder,
)
from asd.errors import AsdError, redact
from asd.features import FeatureSet, extract_features
from asd.model.encoder import Encoder, load_encoder, save_encoder
from asd.model.train import resolve_device
from asd.presets import PRESETS, preset
from asd.staging import check_writable, publish, tmp_folder

if TYPE_CHECKING:
    from asd.cli.platform import Subparsers

log = logging.getLogger("asd")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asd`` console script."""
    set_local_defaults()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, e.g. for a sweep's provenance
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AsdError as exc:
        if args.debug:
            raise
        print(f"asd: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asd: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """All subcommands; each one's handler is ``args.func``."""
    parser = argparse.ArgumentParser(
        prog="asd", description="Anomalous machine-sound detection: train, evaluate, sweep."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(metavar="COMMAND")
    add_data_parser(sub)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_score_parser(sub)
    add_detector_parser(sub)
    add_platform_commands(sub)
    accept_debug_everywhere(parser)
    return parser


def _add_train_parser(sub: Subparsers) -> None:
    train = sub.add_parser("train", help="train the contrastive encoder on normal clips")
    _add_data_args(train)
    _add_config_args(train)
    train.add_argument("--out", type=Path, help="run folder (default: <workdir>/runs/<time>)")
    again = train.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue the run in --out (same config and data)"
    )
    again.add_argument("--overwrite", action="store_true", help="replace whatever run --out holds")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    train.set_defaults(func=cmd_train)


def _add_score_parser(sub: Subparsers) -> None:
    score = sub.add_parser("score", help="score new wav files with a detector (e.g. the champion)")
    score.add_argument("files", nargs="+", type=Path, help="wav files or folders of them")
    which = score.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model",
        help="a fitted detector, used as it is: models:/asd-detector@champion, "
        "models:/asd-detector/<version> or a detector folder",
    )
    which.add_argument(
        "--encoder", help="encoder.pt, a run folder or models:/... (scorer refitted on --data)"
    )
    score.add_argument("--machine", required=True, help="machine type of the new clips")
    score.add_argument("--section", type=int, default=0)
    score.add_argument("--data", type=Path, help="with --encoder: data with its normal train clips")
    score.add_argument(
        "--batch-size", type=int, default=256, help="clips scored at a time (--model)"
    )
    score.add_argument("--estimator", choices=list(SCORERS), default="ml")
    score.add_argument("--tracking-uri", help="MLflow URI for models:/ encoders")
    score.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    score.add_argument("--out", type=Path, help="write the scores as CSV here")
    score.add_argument("--device", default="auto")
    score.add_argument("--quiet", action="store_true")
    score.set_defaults(func=cmd_score, machines=None, ground_truth=None)


def _add_evaluate_parser(sub: Subparsers) -> None:
    """`asd evaluate`: an encoder (with the untrained reference beside it) or the reference."""
    evaluate = sub.add_parser("evaluate", help="score test clips and print the official score")
    _add_data_args(evaluate)
    evaluate.add_argument(
        "--encoder",
        help="encoder.pt, a run folder, or models:/<name>@<alias> (needs --tracking-uri)",
    )
    evaluate.add_argument(
        "--model",
        help="a fitted detector as it is (no refitting): models:/asd-detector@champion, "
        "models:/<name>/<version> or a detector folder",
    )
    evaluate.add_argument(
        "--embedding",
        choices=["encoder", "logmel", "mean-logmel", "mean-std-logmel"],
        default="encoder",
        help="logmel: an untrained detector on the log-mel pooled by --pool (mean-logmel, "
        "mean-std-logmel: the two references alone); encoder: the --encoder run's detector",
    )
    evaluate.add_argument(
        "--preset",
        help=f"score the detector of this preset: {_preset_names()} "
        "(twfr-gmm needs no encoder)",
    )
    evaluate.add_argument(
        "--pool",
        help="temporal pooling: mean, max, meanstd, p90, gwrp0.9, mean+max ... (of the log-mel "
        "with --embedding logmel, else of the encoder's frames; 'own' = the encoder's own)",
    )
    evaluate.add_argument(
        "--members",
        help="an ensemble instead: comma-separated frames/pooling[/scorer], e.g. "
        "logmel/meanstd,logmel/max (max of z; --combine mean for the mean)",
    )
    evaluate.add_argument("--combine", choices=["max", "mean"], help="how members combine")
    evaluate.add_argument(
        "--reference",
        help="the log-mel pooling of a 'reference'-family detector (default: its config's)",
    )
    evaluate.add_argument(
        "--estimator",
        choices=[*SCORERS, "both", "all"],
        help="scorer(s): both = ml and elliptic; all = every scorer; "
        "default: ml, elliptic and the detector's own",
    )
    evaluate.add_argument(
        "--embed-from",
        choices=["backbone", "projection"],
        help="score on this vector instead of the encoder's own choice (same weights)",
    )
    evaluate.add_argument("--out", type=Path, help="folder for CSVs and plots")
    evaluate.add_argument("--tracking-uri", help="MLflow URI for models:/ encoders")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(func=cmd_evaluate)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="folder holding dev_data/")
    p.add_argument("--machines", nargs="+", action="extend", help="only these machine types")
    p.add_argument("--ground-truth", type=Path, help="eval ground-truth CSV folder")
    p.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"feature cache and runs (default: ./{DEFAULT_WORKDIR})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset", default="paper", help=f"starting config: {_preset_names()} (default: paper)"
    )
    p.add_argument("--config", type=Path, help="a config.json (flat dotted keys) to start from")
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="overrides, e.g. loss.temperature=0.1 train.epochs=5",
    )


def _preset_names() -> str:
    """Every preset's name, for --preset help: taken from asd.presets, so none is left out."""
    return ", ".join(PRESETS)


def config_from_args(args: argparse.Namespace) -> Config:
    """The preset, then --config, then --set, each validated."""
    cfg = preset(args.preset)
    if args.config:
        try:
            cfg = cfg.with_overrides(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise AsdError(f"cannot read config {args.config}: {exc}") from None
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise AsdError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = _parse_value(value)
    return cfg.with_overrides(overrides)  # validates, also with no overrides


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_feature_set(args: argparse.Namespace, feature_cfg: FeatureConfig) -> FeatureSet:
    """Index ``--data`` and extract (or reuse) its cached log-mels."""
    index = index_data(args.data, machines=args.machines, ground_truth=args.ground_truth)
    return extract_features(
        index, feature_cfg, Path(args.workdir) / "features", progress=not args.quiet
    )


def cmd_train(args: argparse.Namespace) -> int:
    """Train an encoder and save it with its config and history."""
    cfg = config_from_args(args)
    out = args.out or Path(args.workdir) / "runs" / time.strftime("%Y%m%d-%H%M%S")
    resolve_device(args.device)  # a GPU that is not there is refused before any folder exists
    check_writable(out, "--out")
    index = index_data(args.data, machines=args.machines, ground_truth=args.ground_truth)
    cache = Path(args.workdir) / "features"
    data_fp = fingerprint(index, cache / STORE_NAME)
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "auto"
    with run_folder(out, cfg.to_flat(), data_fp, mode) as resume:
        features = extract_features(index, cfg.features, cache, progress=not args.quiet)
        start = time.monotonic()
        result = train_encoder(
            cfg,
            features,
            device=args.device,
            checkpoint_dir=out / "checkpoints",
            progress=not args.quiet,
            resume=resume,
        )
        extra = {"data_fingerprint": data_fp, "code_version": __version__}
        save_encoder(result.encoder, out / "encoder.pt", cfg, extra)
        pd.DataFrame(result.history).to_csv(out / "history.csv", index=False)
    print(
        f"{'resumed, ' if resume else ''}trained {len(result.history)} epochs in "
        f"{time.monotonic() - start:.0f}s; encoder saved to {out / 'encoder.pt'}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score the test clips with each scorer, the untrained references beside the detector."""
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise AsdError(f"--out {args.out} is a file: evaluate writes a folder")
    if args.out is not None:
        check_writable(args.out, "--out")
    resolve_device(args.device)
    final_out, args.out = args.out, args.out and tmp_folder(args.out.parent, args.out.name)
    try:
        code = _evaluate(args)
        if final_out is not None:
            publish(args.out, final_out)
            print(f"submission CSVs, scores and plots written to {final_out}")
        return code
    finally:
        if args.out is not None and args.out.exists():
            shutil.rmtree(args.out, ignore_errors=True)  # a failed run publishes nothing


def _evaluate(args: argparse.Namespace) -> int:
    """cmd_evaluate's work, with ``args.out`` (if any) the staging folder."""
    start = time.monotonic()
    if args.model:
        uri = args.tracking_uri or read_environment().tracking_uri
        evaluation = evaluate_with_model(args, uri)
        print(format_evaluation(evaluation, f"detector {args.model}: {evaluation.description}"))
        print(f"evaluated in {time.monotonic() - start:.1f}s")
        if args.out:
            save_evaluation(evaluation, args.out)
        return 0
    encoder, cfg, source = _detector_config(args)
    chosen = {"both": ESTIMATORS, "all": SCORERS}
    estimators = chosen.get(args.estimator, (args.estimator,)) if args.estimator else None
    features = load_feature_set(args, cfg.features)
    evaluation = evaluate_detector(
        encoder,
        features,
        cfg,
        estimators,
        out_dir=args.out,
        device=args.device,
        progress=not args.quiet,
    )
    print(format_evaluation(evaluation, f"{source}: {evaluation.description}"))
    print(format_versus(evaluation))
    print(format_machines(evaluation, cfg.scoring.estimator))
    print(f"evaluated in {time.monotonic() - start:.1f}s")
    if args.out:
        save_evaluation(evaluation, args.out)
    return 0


def _detector_config(args: argparse.Namespace) -> tuple[Encoder | None, Config, str]:
    """(encoder or None, config, what it is) for `asd evaluate`'s flags."""
    encoder: Encoder | None = None
    overrides: dict[str, object] = {}
    if args.encoder:
        encoder, cfg, _ = resolve_encoder(args.encoder, args.tracking_uri, args.workdir)
        source = f"encoder {args.encoder}"
        if args.embed_from:
            cfg = cfg.with_overrides({"encoder.embed_from": args.embed_from})
            encoder.cfg = cfg.encoder
    elif args.preset:
        cfg, source = preset(args.preset), f"preset {args.preset}"
    elif args.embedding == "encoder" and not args.members:
        raise AsdError(
            "--encoder is required (or --embedding logmel, --preset twfr-gmm, --members ...)"
        )
    else:
        cfg, source = Config(), "untrained"
    if args.embedding != "encoder":
        pooling = {"mean-logmel": "mean", "mean-std-logmel": "meanstd"}.get(args.embedding)
        overrides = {"scoring.family": "reference", "scoring.reference": pooling or args.pool}
        overrides["scoring.reference"] = overrides["scoring.reference"] or "mean"
    elif args.pool:
        overrides["scoring.pool"] = args.pool
    if args.reference:
        overrides["scoring.reference"] = args.reference
    if args.members:
        overrides.update(
            {"scoring.family": "ensemble", "scoring.members": args.members.split(",")}
        )
    if args.combine:
        overrides["scoring.combine"] = args.combine
    return encoder, cfg.with_overrides(overrides), source


def cmd_score(args: argparse.Namespace) -> int:
    """Score new clips of one machine type; scorer fitted on its normal training clips."""
    if args.out is not None and args.out.is_dir():
        raise AsdError(f"--out {args.out} is a folder: give a file name for the scores CSV")
    if args.out is not None:
        check_writable(args.out, "--out")
    resolve_device(args.device)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.model:
        if args.batch_size < 1:
            raise AsdError(f"--batch-size must be at least 1, got {args.batch_size}")
        uri = args.tracking_uri or read_environment().tracking_uri
        last = score_with_model(args, uri)
        for note in other_machine_notes(last, args.machine):
            log.warning(note)
        return 0
    if args.data is None:
        raise AsdError("--encoder refits its scorer: give --data with the normal training clips")
    paths = wav_paths(args.files)
    encoder, cfg, _ = resolve_encoder(args.encoder, args.tracking_uri, args.workdir)
    args.machines = [args.machine]
    features = load_feature_set(args, cfg.features)
    table = score_new_clips(
        encoder, cfg, features, paths, args.machine, args.section, args.estimator, args.device
    )
    print(table.to_string(index=False))
    print(f"{int(table['decision'].sum())} of {len(table)} clips flagged as anomalous")
    for note in other_machine_notes(table, args.machine):
        log.warning(note)
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


def resolve_encoder(
    spec: str, tracking_uri: str | None, workdir: Path = DEFAULT_WORKDIR
) -> tuple[Encoder, Config, dict[str, Any]]:
    """Load an encoder from a file, a run folder, or the MLflow registry (``models:/``)."""
    if spec.startswith("models:/"):
        from asd.serve.registry import download_champion  # MLflow: only for models:/ encoders
        from asd.tracking.uri import check_tracking_uri

        uri = tracking_uri or read_environment().tracking_uri
        if not uri:
            raise AsdError(f"{spec} needs --tracking-uri (or MLFLOW_TRACKING_URI)")
        check_tracking_uri(uri, must_exist=True)
        name, sep, alias = spec.removeprefix("models:/").partition("@")
        if not sep or not name or not alias:
            raise AsdError(
                f"{spec}: expected models:/<name>@<alias>, e.g. models:/asd-encoder@champion"
            )
        path = download_champion(uri, name, Path(workdir) / "models" / name / alias, alias=alias)
    else:
        path = Path(spec)
        if path.is_dir():
            path = path / "encoder.pt"
    return load_encoder(path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
