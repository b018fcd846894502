"""Which temporal pooling of the log-mel each synthetic machine type rewards, with no learning.

    python benchmarks/synth_pooling.py                  # quality.py's --size cpu data, seed 0
    python benchmarks/synth_pooling.py --size tiny --seed 3 --out /tmp/pooling

Real machines differ: on DCASE valve the anomalies are short events, so the clip mean of the
log-mel is at chance while the per-band maximum over time scores far higher; on stationary
machines the mean (and std) see a steady spectral change the maximum hardly moves with. The
synthetic set must show both, or a benchmark cannot tell whether a detector's pooling matters.
This prints, per machine type, the official hmean (and the plain anomaly-vs-normal AUC) of the
``ml`` scorer (Mahalanobis, the project's own ``evaluate_embeddings``) on three untrained clip
vectors: ``mean``, ``meanstd`` (mean then std over time) and ``max`` (per-band maximum).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import logging  # noqa: E402

from asd.config import Config, FeatureConfig  # noqa: E402
from asd.data.index import DEV_MACHINES, index_dataset  # noqa: E402
from asd.data.synth.tree import synthesize  # noqa: E402
from asd.detect.metrics import anomaly_labels, machine_table  # noqa: E402
from asd.detect.pipeline import evaluate_embeddings  # noqa: E402
from asd.features import FeatureSet, extract_features  # noqa: E402
from benchmarks.quality import SIZES  # noqa: E402

POOLINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda mel: mel.mean(axis=1),
    "meanstd": lambda mel: np.concatenate([mel.mean(axis=1), mel.std(axis=1)]),
    "max": lambda mel: mel.max(axis=1),
}
"""Clip vector from a log-mel (n_mels, frames): the three untrained poolings compared."""


def synth_version() -> str:
    """A hash of the generator's source: data written by an older generator is not reused."""
    blob = b"".join(p.read_bytes() for p in sorted((REPO / "asd").glob("synth*.py")))
    return hashlib.sha256(blob).hexdigest()[:10]


def data(out: Path, size: str, seed: int) -> Path:
    """The synthetic tree for ``size`` and ``seed`` (written once per generator version)."""
    root = out / f"data-{size}-seed{seed}-{synth_version()}"
    if not (root / "dev_data").exists():
        print(f"writing synthetic data to {root} ...", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            synthesize(Path(tmp) / "tree", seed=seed, **SIZES[size])
            (Path(tmp) / "tree").rename(root)
    return root


def pooled(features: FeatureSet, pool: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(clips, dim) clip vectors of every clip."""
    return np.stack(
        [pool(np.asarray(features.clip(i), dtype=np.float64)) for i in range(len(features))]
    )


def measure(features: FeatureSet) -> dict[str, dict[str, tuple[float, float]]]:
    """{pooling: {machine: (official hmean, anomaly-vs-normal AUC)}} with the ``ml`` scorer."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name, pool in POOLINGS.items():
        evaluation = evaluate_embeddings(pooled(features, pool), features.index, Config(), ("ml",))
        results = evaluation.by_estimator["ml"].results
        table = machine_table(results).set_index("machine")
        out[name] = {}
        for machine, part in results.groupby("machine"):
            auc = roc_auc_score(anomaly_labels(part["label"]), part["anomaly_score"])
            out[name][str(machine)] = (float(table.at[machine, "hmean"]), float(auc))
    return out


def format_table(scores: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Markdown: hmean (AUC) per pooling and machine type, and which pooling wins."""
    names = list(scores)
    lines = [
        "| machine | "
        + " | ".join(f"{n} hmean (AUC)" for n in names)
        + " | best | max - meanstd |",
        "|---" * (len(names) + 3) + "|",
    ]
    machines = sorted(next(iter(scores.values())))
    for machine in machines:
        cells = [scores[n][machine] for n in names]
        best = names[int(np.argmax([c[0] for c in cells]))]
        gap = scores["max"][machine][0] - scores["meanstd"][machine][0]
        row = " | ".join(f"{100 * h:.1f} ({100 * a:.1f})" for h, a in cells)
        lines.append(f"| {machine} | {row} | {best} | {100 * gap:+.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="asd-work/synth-pooling", help="data and features")
    args = parser.parse_args(argv)
    logging.getLogger("asd").setLevel(logging.ERROR)  # not the LedoitWolf note per section
    out = Path(args.out)
    root = data(out, args.size, args.seed)
    index = index_dataset(root)
    index = index[index.machine.isin(DEV_MACHINES)].reset_index(drop=True)
    features = extract_features(index, FeatureConfig(), out / "features", progress=False)
    size = SIZES[args.size]
    print(
        f"asd data synth seed {args.seed}, size {args.size}: per machine type "
        f"{size['train_source']} + {size['train_target']} train, "
        f"{size['test_per_domain']} normal + {size['test_per_domain']} anomalous test clips "
        f"per domain, {size['seconds']:g} s; log-mel {FeatureConfig().n_mels} mels; ml scorer\n"
    )
    print(format_table(measure(features)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
