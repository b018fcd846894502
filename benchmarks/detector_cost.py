"""The detector's CPU cost at DCASE size, features cached: pooling, fits, out-of-fold z, scoring.

    python benchmarks/detector_cost.py              # 7 x (1,000 train + 200 test) clips of 10 s
    python benchmarks/detector_cost.py --train 100 --test 40    # a quick look

The log-mels are random (313 frames x 128 mels per clip, the DCASE 2023 shape) held in
memory as a FeatureSet, as a warm feature cache serves them: what is timed is the detector's
own work. Rows: the shipped ``quick`` detector with its own scorer and with every scorer an
evaluation reports (ml and elliptic), each pooling alone, and TWFR-GMM. Prints a table; the
load average beside it says how quiet the machine was.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch

from asd.config import Config, FeatureConfig
from asd.data.index import DEV_MACHINES
from asd.detect.detector import evaluate_detector
from asd.detect.frames import logmel_pooled
from asd.features import FeatureSet
from asd.presets import preset


def dcase_like(train: int, test: int, frames: int, seed: int = 0) -> FeatureSet:
    """7 machine types of ``train`` normal (990:10 source:target) and ``test`` test clips."""
    rng = np.random.default_rng(seed)
    rows, mels = [], []
    n_target = max(1, train // 100)
    for machine in DEV_MACHINES:
        base = rng.normal(-40, 8, size=(128, 1)).astype(np.float32)
        for i in range(train + test):
            split = "train" if i < train else "test"
            if split == "train":
                domain, label = ("target" if i < n_target else "source"), "normal"
            else:
                k = i - train
                domain = "source" if k % 2 == 0 else "target"
                label = "anomaly" if (k // 2) % 2 else "normal"
            mel = base + rng.normal(0, 3, size=(128, frames)).astype(np.float32)
            mels.append(mel)
            rows.append((f"{machine}_{i}.wav", machine, 0, domain, split, label, "dev_data"))
    columns = ["clip", "machine", "section", "domain", "split", "label", "subset"]
    return FeatureSet.from_arrays(mels, pd.DataFrame(rows, columns=columns), FeatureConfig())


def timed(label: str, fn) -> tuple[str, float]:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return label, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000, help="train clips per machine type")
    parser.add_argument("--test", type=int, default=200, help="test clips per machine type")
    parser.add_argument("--frames", type=int, default=313, help="frames per clip (10 s)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    features = dcase_like(args.train, args.test, args.frames)
    quick = preset("quick")
    rows = [
        timed(
            "pooling: meanstd + max of every clip",
            lambda: logmel_pooled(features, ["meanstd", "max"]),
        ),
        timed("pooling: gwrp0.5 of every clip", lambda: logmel_pooled(features, ["gwrp0.5"])),
        timed(
            f"quick detector, its scorer only ({quick.scoring.estimator})",
            lambda: evaluate_detector(
                None, features, quick, (quick.scoring.estimator,), companions=False
            ),
        ),
        timed(
            "quick detector, ml + elliptic (as an evaluation reports)",
            lambda: evaluate_detector(None, features, quick, companions=False),
        ),
        timed(
            "quick detector + both references, ml + elliptic (asd evaluate)",
            lambda: evaluate_detector(None, features, quick),
        ),
        timed(
            "twfr-gmm, its scorer only (gmm)",
            lambda: evaluate_detector(
                None, features, preset("twfr-gmm"), ("gmm",), companions=False
            ),
        ),
    ]
    n = len(features)
    print(
        f"detector cost: {n:,} clips ({args.train} train + {args.test} test per machine type x 7, "
        f"{args.frames} frames), {os.cpu_count()} CPUs, {args.threads} torch threads, "
        f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("\n| what | wall s |\n|---|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} |")
    _ = Config  # the config tree the presets come from


if __name__ == "__main__":
    main()
