"""How long a feature-cache hit takes now that the cache is keyed on the clips' bytes.

    python benchmarks/cache.py                       # 2,000 clips of 2 s (~130 MB)
    python benchmarks/cache.py --clips 500 --seconds 10

A cache hit is: index the tree, ``stat`` every clip and look it up in the content-hash store
(``<cache>/content-hashes.json``), hash the key, load ``meta.json`` and ``index.json`` and
memory-map ``mel.npy``. Only clips whose size, mtime or inode changed are read and hashed
again. Prints one markdown table: the cold extraction, the first hashing of every byte, a
hit, a hit after 1 % of the clips were rewritten, a bare ``stat`` of every clip (the floor),
and the hit projected to the DCASE 2023 development set (7 machine types x 1,200 clips).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from asd.config import FeatureConfig
from asd.data.fingerprint import STORE_NAME
from asd.data.index import fingerprint, index_dataset
from asd.features import extract_features

DCASE_CLIPS = 7 * 1200
"""Clips of the DCASE 2023 Task 2 development set (train + test, 7 machine types)."""


def write_tree(root: Path, clips: int, seconds: float, rate: int = 16_000) -> int:
    """``clips`` noise clips in the DCASE layout (two machine types); returns total bytes."""
    rng = np.random.default_rng(0)
    total = 0
    for n in range(clips):
        machine = ("fan", "valve")[n % 2]
        split = "train" if n % 4 < 3 else "test"
        label = "normal" if split == "train" or n % 8 == 3 else "anomaly"
        name = f"section_00_source_{split}_{label}_{n:05d}_noAttribute.wav"
        path = root / "dev_data" / "raw" / machine / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * rng.standard_normal(int(seconds * rate)).astype(np.float32), rate)
        total += path.stat().st_size
    return total


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(clips: int, seconds: float, repeats: int) -> list[tuple[str, float, str]]:
    """Rows ``(figure, value, unit)`` for a fresh tree of ``clips`` clips in a temp folder."""
    cfg = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        size = write_tree(root, clips, seconds)
        index = index_dataset(root)
        began = time.perf_counter()
        fingerprint(index, Path(tmp) / "first-hash" / STORE_NAME)
        first_hash = time.perf_counter() - began
        began = time.perf_counter()
        extract_features(index, cfg, cache, progress=False)
        cold = time.perf_counter() - began
        hit = median_time(
            lambda: extract_features(index_dataset(root), cfg, cache, progress=False), repeats
        )
        paths = list(index["path"])
        stat_floor = median_time(lambda: [os.stat(p) for p in paths], repeats)
        edited = paths[:: max(1, len(paths) // max(1, clips // 100))]  # ~1 %
        for p in edited:
            os.utime(p, ns=(time.time_ns(), time.time_ns()))  # new mtime: re-hashed
        began = time.perf_counter()
        extract_features(index_dataset(root), cfg, cache, progress=False)
        after_edit = time.perf_counter() - began
    return [
        ("clips", clips, f"x {seconds:g} s, {size / 1e6:.0f} MB"),
        ("cold extraction (hash + read + log-mel + write)", cold, "s"),
        ("first content hash of every byte", first_hash, f"s ({size / 1e6 / first_hash:.0f} MB/s)"),
        ("cache hit (index + stat + store + load)", hit, "s"),
        ("cache hit per 1,000 clips", 1000 * hit / clips, "s"),
        (f"hit after touching {len(edited)} clips (~1 %)", after_edit, "s"),
        ("bare os.stat of every clip (floor)", stat_floor, "s"),
        (f"cache hit projected to {DCASE_CLIPS:,} clips", DCASE_CLIPS * hit / clips, "s"),
    ]


def table(rows: list[tuple[str, float, str]]) -> str:
    """A markdown table of ``rows``."""
    lines = ["| figure | value | unit |", "|---|---|---|"]
    for name, value, unit in rows:
        shown = f"{value:,}" if isinstance(value, int) else f"{value:.3f}"
        lines.append(f"| {name} | {shown} | {unit} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = measure(args.clips, args.seconds, args.repeats)
    load = os.getloadavg()[0]
    print(f"feature cache hit: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {load:.1f}")  # fmt: skip
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
