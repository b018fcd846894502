"""Decision thresholds on unseen clips, and the untrained references, as one table.

For each reference statistic (clip mean; clip mean + std of the log-mel) and each scorer
(ml, elliptic, knn) it prints the official hmean and the share of *normal test clips*
flagged as anomalous with in-sample thresholds (``scoring.threshold_folds 0``) and with
out-of-fold ones (the default, 5 folds). The target share is ``1 - threshold_quantile``.
No training: minutes on a CPU.

    python benchmarks/thresholds.py                    # a synthetic set made in --workdir
    python benchmarks/thresholds.py --data /path/to/dcase --quantile 0.9
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from asd.config import SCORERS, Config
from asd.data.index import index_dataset
from asd.data.synth.tree import DEV_MACHINES, synthesize
from asd.detect.detector import evaluate_reference
from asd.features import extract_features


def flag_rate(evaluation, scorer: str, domain: str | None = None) -> float:
    """Share of the labelled normal test clips (of ``domain``, or all) whose decision is 1."""
    results = evaluation.by_estimator[scorer].results
    normal = results["label"] == "normal"
    if domain is not None:
        normal &= results["domain"] == domain
    return float(results.loc[normal, "decision"].mean())


def rows(features, quantile: float, folds: int) -> list[tuple]:
    """(statistic, scorer, hmean, flag rates: in-sample, out-of-fold, oof source, oof target)."""
    out = []
    for statistic in ("mean", "mean_std"):
        base = {"scoring.reference": statistic, "scoring.threshold_quantile": quantile}
        by_folds = {
            f: evaluate_reference(
                features, Config().with_overrides({**base, "scoring.threshold_folds": f}), SCORERS
            )
            for f in (0, folds)
        }
        for scorer in SCORERS:
            hmean = by_folds[folds].by_estimator[scorer].summary["hmean"]
            out.append(
                (
                    statistic,
                    scorer,
                    hmean,
                    flag_rate(by_folds[0], scorer),
                    flag_rate(by_folds[folds], scorer),
                    flag_rate(by_folds[folds], scorer, "source"),
                    flag_rate(by_folds[folds], scorer, "target"),
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="DCASE tree (default: synthetic)")
    parser.add_argument("--workdir", type=Path, default=Path("asd-work/bench-thresholds"))
    parser.add_argument("--quantile", type=float, default=0.9)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--train-source", type=int, default=100, help="synthetic set only")
    parser.add_argument("--seconds", type=float, default=4.0, help="synthetic set only")
    parser.add_argument("--machines", nargs="+", help="synthetic set only (default: all 7)")
    parser.add_argument("--test-per-domain", type=int, default=25, help="synthetic set only")
    args = parser.parse_args(argv)
    start = time.monotonic()
    root = args.data
    if root is None:
        root = args.workdir / "synthetic"
        if not (root / "dev_data").exists():
            synthesize(
                root,
                machines=args.machines or DEV_MACHINES,
                train_source=args.train_source,
                train_target=10,
                test_per_domain=args.test_per_domain,
                seconds=args.seconds,
                seed=1,
            )
    index = index_dataset(root)
    features = extract_features(index, Config().features, args.workdir / "features", progress=False)
    table = rows(features, args.quantile, args.folds)
    print(
        f"## thresholds and references on {root} ({len(index)} clips, "
        f"{index['machine'].nunique()} machine types)"
    )
    print(f"target share of normal test clips flagged: {100 * (1 - args.quantile):.0f} %")
    print(
        "| reference | scorer | hmean % | flagged, in-sample % | flagged, out-of-fold % "
        "| out-of-fold, source % | out-of-fold, target % |"
    )
    print("|---|---|---|---|---|---|---|")
    for statistic, scorer, hmean, *rates in table:
        shown = " | ".join(f"{100 * r:.1f}" for r in rates)
        print(f"| {statistic} | {scorer} | {100 * hmean:.2f} | {shown} |")
    print(
        f"wall {time.monotonic() - start:.0f} s on {platform.processor() or platform.machine()}, "
        f"numpy {np.__version__}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
