"""The train/test split manifest of a data set that ships without one (MIMII, ToyADMOS).

``<data>/asd_split.json`` names every recording's split, so a split is decided once, by a
stated rule and seed, and every later run (any machine, any Python) reads the same one. The
rule works on the rows :mod:`asd.data.layouts` reads; this module never walks a tree.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from asd.errors import AsdError

SPLIT_FILE = "asd_split.json"
"""Name of the train/test manifest written into a MIMII / ToyADMOS folder."""
SPLIT_FORMAT = 1
"""Version of the manifest's JSON layout."""


def split_manifest(
    rows: list[dict], layout: str, seed: int = 0, test_fraction: float | None = None
) -> dict:
    """A reproducible train/test split of unsplit rows (each with ``key`` and ``label``).

    Per machine and section: every anomaly goes to test; of the normals, ``test_fraction``
    (at least one, leaving at least one for training) or, without it, as many as there are
    anomalies (the MIMII baseline's balanced test set) go to test, the rest to train. Which
    normals is decided by ranking ``sha256(seed:key)``: the same seed gives the same split on
    any machine and Python version. Keys (``<machine>/<id or case>/<label folder>/<clip>``)
    leave out the noise level, so every MIMII level of a recording lands in the same split.
    """
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise AsdError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    groups: dict[str, dict[str, set[str]]] = {}
    for row in rows:
        group = str(row["key"]).rsplit("/", 2)[0]  # <machine>/<id or case>
        groups.setdefault(group, {"normal": set(), "anomaly": set()})[str(row["label"])].add(
            str(row["key"])
        )
    clips: dict[str, str] = {}
    for group in sorted(groups):
        normals, anomalies = sorted(groups[group]["normal"]), sorted(groups[group]["anomaly"])
        n_test = _n_test(len(normals), len(anomalies), test_fraction)
        ranked = sorted(normals, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
        clips.update({k: "test" for k in ranked[:n_test]})
        clips.update({k: "train" for k in ranked[n_test:]})
        clips.update({k: "test" for k in anomalies})
    return {
        "format": SPLIT_FORMAT,
        "layout": layout,
        "seed": seed,
        "test_fraction": test_fraction,
        "rule": "per machine and section: anomalies in test; normals ranked by "
        "sha256('<seed>:<key>'), the first test_fraction of them (or as many as anomalies) in test",
        "n_train": sum(v == "train" for v in clips.values()),
        "n_test": sum(v == "test" for v in clips.values()),
        "clips": dict(sorted(clips.items())),
    }


def _n_test(n_normal: int, n_anomaly: int, test_fraction: float | None) -> int:
    """How many normals of a section go to test: at least one, and one stays for training."""
    if n_normal < 2:
        return 0
    wanted = round(test_fraction * n_normal) if test_fraction is not None else n_anomaly
    return min(max(wanted, 1), n_normal - 1)


def save_split(root: Path, manifest: dict, overwrite: bool = False) -> Path:
    """Write ``manifest`` to ``<root>/asd_split.json``; the path written.

    An existing manifest made with other settings is kept unless ``overwrite``: models trained
    on the old split would otherwise be tested on their own training clips.
    """
    path = root / SPLIT_FILE
    seed, test_fraction = manifest["seed"], manifest["test_fraction"]
    if path.exists() and not overwrite:
        old = read_split(path)
        if (old.get("seed"), old.get("test_fraction")) != (seed, test_fraction):
            raise AsdError(
                f"{path} already holds a split with seed {old.get('seed')} and test fraction "
                f"{old.get('test_fraction') or 'default'}: pass --overwrite to replace it"
            )
    try:
        path.write_text(json.dumps(manifest, indent=1) + "\n")
    except OSError as exc:
        raise AsdError(f"cannot write the split manifest {path}: {exc.strerror or exc}") from None
    return path


def read_split(path: Path) -> dict:
    """A manifest written by :func:`write_split`; AsdError naming the file when unreadable."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AsdError(f"cannot read the split manifest {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SPLIT_FORMAT:
        raise AsdError(f"{path} is not an asd split manifest (format {SPLIT_FORMAT})")
    if not isinstance(manifest.get("clips"), dict):
        raise AsdError(f"{path} has no 'clips' table")
    return manifest


def apply_split(rows: list[dict], root: Path, title: str) -> list[dict]:
    """Give each row its split from ``<root>/asd_split.json``; AsdError if it does not fit."""
    path = root / SPLIT_FILE
    if not path.is_file():
        raise AsdError(
            f"{root} is a {title} tree without a train/test split: run "
            f"`asd data split --data {root} --seed 0` first (it writes {SPLIT_FILE})"
        )
    clips = read_split(path)["clips"]
    missing = sorted({str(r["key"]) for r in rows if r["key"] not in clips})
    if missing:
        raise AsdError(
            f"{len(missing)} clips are not in the split manifest {path} (e.g. {missing[0]}): "
            f"the data changed since `asd data split`; run it again with --overwrite"
        )
    gone = sorted(set(clips) - {str(r["key"]) for r in rows})
    if gone:
        raise AsdError(
            f"the split manifest {path} lists {len(gone)} clips that are not in {root} "
            f"(e.g. {gone[0]}); run `asd data split --overwrite` again"
        )
    for row in rows:
        row["split"] = clips[row.pop("key")]
        if row["split"] not in ("train", "test"):
            raise AsdError(f"{path}: split of {row['path']} is '{row['split']}', not train/test")
        if row["split"] == "train" and row["label"] != "normal":
            raise AsdError(f"{path} puts anomalous clip {row['path']} in train")
    return rows
