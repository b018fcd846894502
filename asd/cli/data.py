"""`asd data ...`: write a synthetic tree, index a tree, write a split manifest.

The data commands share nothing with training or evaluation but the data layer, so they
live apart from :mod:`asd.cli.main`, which only adds their parser.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from asd.config import DEFAULT_WORKDIR
from asd.data.fingerprint import STORE_NAME, verify_store
from asd.data.layouts import detect_layout, index_data, write_split
from asd.data.split import SPLIT_FILE
from asd.data.synth.tree import synthesize

if TYPE_CHECKING:
    from asd.cli.platform import Subparsers


def add_data_parser(sub: Subparsers) -> None:
    """`asd data synth`, `asd data index` and `asd data split`."""
    data = sub.add_parser("data", help="synthesise, index or split a data tree")
    data_sub = data.add_subparsers(metavar="ACTION")
    synth = data_sub.add_parser("synth", help="write a synthetic data set in the DCASE layout")
    synth.add_argument("--out", type=Path, required=True, help="folder to write")
    synth.add_argument(
        "--machines", nargs="+", action="extend", help="machine types (default: the 7 dev types)"
    )
    synth.add_argument("--train-source", type=int, help="normal source train clips per machine")
    synth.add_argument("--train-target", type=int, help="normal target train clips per machine")
    synth.add_argument(
        "--test-per-domain", type=int, help="test clips per domain and per label (normal/anomaly)"
    )
    synth.add_argument("--seconds", type=float, help="clip length in seconds")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--overwrite", action="store_true", help="replace a tree --out holds (other settings)"
    )
    synth.set_defaults(func=cmd_data_synth)
    index = data_sub.add_parser("index", help="index a data tree and print clip counts")
    index.add_argument("--data", type=Path, required=True, help="data folder (any known layout)")
    index.add_argument("--ground-truth", type=Path, help="eval ground-truth CSV folder")
    index.add_argument("--out", type=Path, help="write the index as CSV here")
    index.add_argument(
        "--verify",
        action="store_true",
        help="re-hash every clip (the content store trusts size and mtime) and correct the store",
    )
    index.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="whose content store --verify checks"
    )
    index.set_defaults(func=cmd_data_index)
    split = data_sub.add_parser(
        "split", help=f"train/test split of a MIMII or ToyADMOS tree, written to {SPLIT_FILE}"
    )
    split.add_argument("--data", type=Path, required=True, help="the MIMII / ToyADMOS folder")
    split.add_argument("--seed", type=int, default=0, help="which normals go to test")
    split.add_argument(
        "--test-fraction",
        type=float,
        help="share of each section's normals held out for test (default: as many as anomalies)",
    )
    split.add_argument("--overwrite", action="store_true", help="replace a split of other settings")
    split.set_defaults(func=cmd_data_split)


def cmd_data_synth(args: argparse.Namespace) -> int:
    """Write a synthetic DCASE tree."""
    options = {
        "machines": tuple(args.machines) if args.machines else None,
        "train_source": args.train_source,
        "train_target": args.train_target,
        "test_per_domain": args.test_per_domain,
        "seconds": args.seconds,
    }
    start = time.monotonic()
    given = {k: v for k, v in options.items() if v is not None}  # an explicit 0 means 0
    root = synthesize(args.out, seed=args.seed, overwrite=args.overwrite, **given)
    print(f"wrote a synthetic DCASE 2023 tree to {root} in {time.monotonic() - start:.1f}s")
    return 0


def cmd_data_index(args: argparse.Namespace) -> int:
    """Print the detected layout and how many clips each machine, split, domain and label has."""
    layout = detect_layout(args.data)
    index = index_data(args.data, ground_truth=args.ground_truth)
    scored = "DCASE 2023 official score" if layout.domains == 2 else (
        "one domain: AUC, pAUC and their harmonic mean, not the DCASE 2023 official score"
    )  # fmt: skip
    print(f"layout: {layout.title} ({layout.name}); {scored}")
    counts = index.groupby(["subset", "machine", "split", "domain", "label"]).size()
    print(counts.unstack(["split", "domain", "label"], fill_value=0).to_string())
    if args.out:
        frame = index.copy()
        frame["attributes"] = frame["attributes"].map(json.dumps)
        frame.to_csv(args.out, index=False)
        print(f"index written to {args.out}")
    if args.verify:
        store = Path(args.workdir) / "features" / STORE_NAME
        checked, changed = verify_store(index["path"], store)
        if not changed:
            print(f"verified {checked} clips: every one matches the content store {store}")
            return 0
        print(
            f"{len(changed)} of {checked} clips changed although their size and mtime did not "
            f"(first: {changed[0]}); {store} is corrected: the next run reads them again"
        )
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    """Write a reproducible train/test manifest for a tree that ships without a split."""
    path, manifest = write_split(args.data, args.seed, args.test_fraction, args.overwrite)
    print(
        f"split {manifest['n_train'] + manifest['n_test']} clips (seed {args.seed}): "
        f"{manifest['n_train']} normal clips in train, {manifest['n_test']} clips (every "
        f"anomaly and the held-out normals) in test; manifest written to {path}"
    )
    return 0
