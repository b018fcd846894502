"""`asd score --model`, `asd evaluate --model` and `asd detector add-machine`.

A ``--model`` is a detector folder (:mod:`asd.detect.artifact`) or a registered version,
``models:/asd-detector@champion`` or ``models:/asd-detector/3``; registered ones are
downloaded to ``<workdir>/models/<name>/<alias or version>`` and used as they are: nothing is
refitted. MLflow is imported only for ``models:/`` and for registering.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from asd.config import DEFAULT_WORKDIR
from asd.data.fingerprint import STORE_NAME
from asd.data.index import fingerprint
from asd.data.layouts import index_data
from asd.detect.artifact import Detector, add_machine, load_detector, save_detector
from asd.detect.pipeline import Evaluation, estimator_result, labelled_test_mask
from asd.errors import AsdError
from asd.features import extract_features
from asd.serve.audio import score_files

if TYPE_CHECKING:
    import pandas as pd

DETECTOR_ARTIFACT = "detector"


@dataclass(frozen=True)
class ModelRef:
    """Where a detector came from: a folder, or a registered model and version."""

    detector: Detector
    folder: Path
    name: str | None = None
    version: str | None = None
    tags: dict[str, str] | None = None
    tracking_uri: str | None = None


def parse_model_uri(spec: str) -> tuple[str, str]:
    """(name, alias or version) of ``models:/<name>@<alias>`` or ``models:/<name>/<version>``."""
    rest = spec.removeprefix("models:/")
    name, sep, ref = rest.partition("@") if "@" in rest else rest.partition("/")
    if not sep or not name or not ref or (sep == "/" and not ref.isdigit()):
        raise AsdError(
            f"{spec}: expected models:/<name>@<alias> or models:/<name>/<version>, "
            "e.g. models:/asd-detector@champion"
        )
    return name, ref


def resolve_model(spec: str, tracking_uri: str | None, workdir: Path) -> ModelRef:
    """Load the detector ``--model`` names (see the module docstring)."""
    if not spec.startswith("models:/"):
        return ModelRef(load_detector(spec), Path(spec))
    from asd.serve.registry import download_model_folder
    from asd.tracking.uri import check_tracking_uri

    if not tracking_uri:
        raise AsdError(f"{spec} needs --tracking-uri (or MLFLOW_TRACKING_URI)")
    check_tracking_uri(tracking_uri, must_exist=True)
    name, ref = parse_model_uri(spec)
    dst = Path(workdir) / "models" / name / ref
    folder, version = download_model_folder(tracking_uri, name, ref, DETECTOR_ARTIFACT, dst)
    return ModelRef(
        load_detector(folder), folder, name, str(version.version), dict(version.tags),
        tracking_uri,
    )  # fmt: skip


def wav_paths(items: list[Path]) -> list[Path]:
    """The wav files named, folders expanded (sorted); AsdError for a missing one."""
    paths: list[Path] = []
    for item in items:
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() == ".wav")
        elif item.is_file():
            paths.append(item)
        else:
            raise AsdError(f"{item} does not exist")
    if not paths:
        raise AsdError("no wav files to score")
    return paths


def score_with_model(args: argparse.Namespace, tracking_uri: str | None) -> pd.DataFrame:
    """`asd score --model`: stream the files through the detector in batches.

    Memory holds one batch; the CSV (``--out``) grows batch by batch and a progress line
    (clips, clips/s) goes to stderr. Returns the last batch (the caller's notes look at it).
    """
    ref = resolve_model(args.model, tracking_uri, args.workdir)
    paths = wav_paths(args.files)
    ref.detector.check_sections(
        _one_row(args.machine, args.section)
    )  # a wrong machine fails before any clip is read
    start, done, flagged, last = time.monotonic(), 0, 0, None
    out_fh = open(args.out, "w") if args.out else None  # noqa: SIM115 - closed below
    try:
        for batch in score_files(ref.detector, paths, args.machine, args.section,
                                 args.batch_size, device=args.device):  # fmt: skip
            if out_fh is not None:
                batch.to_csv(out_fh, index=False, header=done == 0)
            if out_fh is None or len(paths) <= 50:
                print(batch.to_string(index=False, header=done == 0))
            done, flagged, last = done + len(batch), flagged + int(batch["decision"].sum()), batch
            _progress(done, len(paths), start, args.quiet, sys.stderr)
    finally:
        if out_fh is not None:
            out_fh.close()
    print(f"{flagged} of {done} clips flagged as anomalous ({ref.detector.describe()})")
    assert last is not None
    return last


def _one_row(machine: str, section: int) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"machine": [machine], "section": [section]})


def _progress(done: int, total: int, start: float, quiet: bool, stream: TextIO) -> None:
    if quiet:
        return
    rate = done / max(time.monotonic() - start, 1e-9)
    print(f"scored {done}/{total} clips ({rate:.1f} clips/s)", file=stream, flush=True)


def evaluate_with_model(args: argparse.Namespace, tracking_uri: str | None) -> Evaluation:
    """`asd evaluate --model`: the frozen detector on the test clips of ``--data``."""
    ref = resolve_model(args.model, tracking_uri, args.workdir)
    detector = ref.detector
    machines = args.machines or sorted({m for m, _ in detector.sections()})
    index = index_data(args.data, machines=machines, ground_truth=args.ground_truth)
    features = extract_features(
        index, detector.config.features, Path(args.workdir) / "features", progress=not args.quiet
    )
    test = features.subset((features.index["split"] == "test").to_numpy())
    if len(test) == 0:
        raise AsdError(f"no test clips of {', '.join(machines)} in {args.data}")
    results = detector.score_features(test, device=args.device)
    labelled = labelled_test_mask(test.index)
    estimator = detector.config.scoring.estimator
    result = estimator_result(estimator, results, labelled)
    return Evaluation({estimator: result}, description=detector.describe())


def cmd_add_machine(args: argparse.Namespace) -> int:
    """Fit the sections of ``--data`` into the detector; a new version (or folder) results."""
    from asd.cli.platform import read_environment

    tracking_uri = args.tracking_uri or read_environment().tracking_uri
    ref = resolve_model(args.model, tracking_uri, args.workdir)
    index = index_data(args.data, machines=args.machines, ground_truth=args.ground_truth)
    cache = Path(args.workdir) / "features"
    data_fp = fingerprint(index, cache / STORE_NAME)
    features = extract_features(index, ref.detector.config.features, cache, progress=not args.quiet)
    normal = int(
        np.sum((features.index["split"] == "train") & (features.index["label"] == "normal"))
    )
    grown = add_machine(ref.detector, features, data_fp, device=args.device)
    added = sorted(set(grown.sections()) - set(ref.detector.sections()))
    names = ", ".join(f"{m}/{s:02d}" for m, s in added)
    if ref.name is None:
        if args.out is None:
            raise AsdError("--model is a folder: give --out for the grown detector's folder")
        save_detector(grown, args.out)
        print(f"added {names} ({normal} normal training clips); detector written to {args.out}")
        return 0
    version = _register_grown(ref, grown, data_fp, args)
    print(
        f"added {names} ({normal} normal training clips): registered {ref.name} v{version}; "
        f"v{ref.version} is unchanged. Score with --model models:/{ref.name}/{version}"
    )
    return 0


def _register_grown(ref: ModelRef, grown: Detector, data_fp: str, args: argparse.Namespace) -> str:
    """Save and register ``grown`` as a new version beside ``ref``'s (whose tags it extends)."""
    from asd.serve.model import register_detector
    from asd.serve.registry import RegistryTags

    assert ref.name and ref.tracking_uri and ref.tags is not None
    folder = save_detector(grown, Path(args.workdir) / "detectors" / f"{ref.name}-grown")
    parent = RegistryTags.from_tags(ref.tags)  # without the parent's promotion claims
    tags = replace(
        parent,
        data_fingerprint=f"{parent.data_fingerprint}+{data_fp}",
        extra={**parent.extra, "parent_version": str(ref.version)},
    )
    return register_detector(ref.tracking_uri, folder, tags, name=ref.name)


def add_detector_parser(sub: argparse._SubParsersAction) -> None:
    """`asd detector add-machine`."""
    detector = sub.add_parser("detector", help="change a fitted detector without retraining")
    actions = detector.add_subparsers(metavar="ACTION")
    add = actions.add_parser(
        "add-machine",
        help="fit a new machine type's (or section's) scorer from its normal training clips",
    )
    add.add_argument(
        "--model", required=True, help="models:/<name>@<alias>, /<version> or a folder"
    )
    add.add_argument("--data", type=Path, required=True, help="data tree of the new machine(s)")
    add.add_argument("--machines", nargs="+", action="extend", help="only these machine types")
    add.add_argument("--ground-truth", type=Path, help=argparse.SUPPRESS)
    add.add_argument("--out", type=Path, help="folder for the grown detector (a folder --model)")
    add.add_argument("--tracking-uri", help="MLflow URI for models:/ detectors")
    add.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    add.add_argument("--device", default="auto")
    add.add_argument("--quiet", action="store_true")
    add.set_defaults(func=cmd_add_machine)
