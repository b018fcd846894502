"""The DCASE 2023 Task 2 tree: index every clip, read waveforms.

Layout: ``<root>/<dev_data|eval_data>/raw/<machine>/<train|test>/*.wav``. Dev names carry
section, domain, split, label, index and attributes
(``section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav``); eval test names carry
only section and index (``section_00_0000.wav``), their labels and domains come from the
headerless ground-truth CSVs.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio.functional as AF

from asd.data.fingerprint import content_fingerprint
from asd.errors import AsdError, warn_once

log = logging.getLogger(__name__)

DEV_MACHINES = ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve")
"""Machine types of the development set."""
EVAL_MACHINES = ("ToyDrone", "ToyNscale", "ToyTank", "Vacuum", "bandsaw", "grinder", "shaker")
"""Machine types of the additional training / evaluation set."""

SUBSETS = ("dev_data", "eval_data")
"""Top-level folders of a DCASE tree."""

COLUMNS = ["path", "subset", "machine", "section", "domain", "split", "label", "clip", "attributes"]
"""Columns of :func:`index_dataset`, in order."""

_LABELED = re.compile(
    r"^section_(?P<section>\d+)_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d+)(?:_(?P<attrs>.+))?\.wav$"
)
_UNLABELED = re.compile(r"^section_(?P<section>\d+)_(?P<index>\d+)\.wav$")
_TOKEN = re.compile(r"^[A-Za-z0-9.\-]+$")
_GROUND_TRUTH = re.compile(r"^ground_truth_(?P<machine>.+)_section_(?P<section>\d+)_test\.csv$")


@dataclass(frozen=True)
class ClipName:
    """What a DCASE file name says about its clip (None where an eval test name is silent)."""

    section: int
    domain: str | None
    split: str | None
    label: str | None
    index: int
    attributes: dict[str, str] = field(default_factory=dict)


def parse_clip_name(name: str) -> ClipName:
    """Parse a dev-style or eval-test file name; AsdError naming the file otherwise.

    Attributes are ``key_value`` pairs after the index (``car_A1_spd_28V_mic_1``);
    ``noAttribute`` means none; an odd leftover token becomes a key with value ''.
    """
    base = Path(name).name
    if base[-4:].lower() == ".wav":
        base = base[:-4] + ".wav"  # section_00_0000.WAV is the same clip name
    match = _LABELED.match(base)
    if match:
        attrs = _parse_attributes(match["attrs"], name)
        return ClipName(
            section=int(match["section"]),
            domain=match["domain"],
            split=match["split"],
            label=match["label"],
            index=int(match["index"]),
            attributes=attrs,
        )
    match = _UNLABELED.match(base)
    if match:
        return ClipName(int(match["section"]), None, None, None, int(match["index"]), {})
    raise AsdError(
        f"file name outside the DCASE pattern: {name} (expected e.g. "
        "section_00_source_train_normal_0000_<key>_<value>.wav or section_00_0000.wav)"
    )


def _parse_attributes(text: str | None, name: str) -> dict[str, str]:
    """``k1_v1_k2_v2`` -> {k1: v1, k2: v2}; 'noAttribute' or nothing -> {}."""
    if not text or text == "noAttribute":
        return {}
    tokens = text.split("_")
    if any(not _TOKEN.match(tok) for tok in tokens):
        raise AsdError(f"bad attribute part '{text}' in file name {name}")
    attrs = {tokens[i]: tokens[i + 1] for i in range(0, len(tokens) - 1, 2)}
    if len(tokens) % 2:
        attrs[tokens[-1]] = ""
    return attrs


def index_dataset(
    root: str | Path,
    machines: list[str] | tuple[str, ...] | None = None,
    ground_truth: str | Path | None = None,
) -> pd.DataFrame:
    """One row per clip of a DCASE tree: what every later stage selects from.

    ``root`` holds ``dev_data/`` and/or ``eval_data/`` (or is one of them). ``machines``
    keeps only those machine types. Eval test clips get domain and label from the CSVs under
    ``ground_truth`` (searched recursively; files with 'domain' in their path give domains),
    else 'unknown'. Rows are sorted by (subset, machine, section, split, clip).
    """
    root = Path(root)
    if not root.is_dir():
        raise AsdError(f"data folder not found: {root}")
    subsets = _subset_dirs(root)
    found: dict[str, tuple[str, Path]] = {}  # machine -> (subset, folder)
    for subset, raw in subsets:
        for folder in sorted(p for p in raw.iterdir() if p.is_dir()):
            found.setdefault(folder.name, (subset, folder))
    if not found:
        raise AsdError(f"no machine folders under {', '.join(str(r) for _, r in subsets)}")
    if machines is not None:
        unknown = [m for m in machines if m not in found]
        if unknown:
            raise AsdError(
                f"machine type(s) {', '.join(unknown)} not found in {root} "
                f"(found: {', '.join(sorted(found))})"
            )
        selected = [m for m in found if m in set(machines)]
    else:
        selected = list(found)

    truth = _read_ground_truth(Path(ground_truth)) if ground_truth is not None else {}
    rows = []
    for subset, raw in subsets:
        for machine in selected:
            folder = raw / machine
            if not folder.is_dir():
                continue
            rows.extend(_index_machine(subset, machine, folder, truth))
    index = pd.DataFrame(rows, columns=COLUMNS)
    index = index.sort_values(["subset", "machine", "section", "split", "clip"], kind="stable")
    return index.reset_index(drop=True)


def _subset_dirs(root: Path) -> list[tuple[str, Path]]:
    """(subset, raw folder) pairs under ``root``, or ``root`` itself when it is a subset."""
    candidates = [(s, root / s) for s in SUBSETS if (root / s).is_dir()]
    if not candidates and root.name in SUBSETS:
        candidates = [(root.name, root)]
    if not candidates:
        raise AsdError(f"no dev_data/ or eval_data/ folder in {root}")
    # The official archives unpack to <subset>/raw/<machine>; accept <subset>/<machine> too.
    return [(s, p / "raw" if (p / "raw").is_dir() else p) for s, p in candidates]


def _index_machine(
    subset: str, machine: str, folder: Path, truth: dict[tuple[str, str], dict[str, dict]]
) -> list[dict]:
    """Rows of one machine folder; errors for missing train clips or an empty test folder."""
    train = _wav_files(folder / "train")
    if not train:
        raise AsdError(f"no training clips in {folder / 'train'}")
    test_dir = folder / "test"
    test = _wav_files(test_dir) if test_dir.is_dir() else []
    if test_dir.is_dir() and not test:
        raise AsdError(f"no clips in {test_dir}")
    both = sorted({p.name for p in train} & {p.name for p in test})
    if both:
        raise AsdError(f"clip {both[0]} is in both {folder / 'train'} and {test_dir}")
    rows = []
    for split, paths in (("train", train), ("test", test)):
        for path in paths:
            name = parse_clip_name(str(path))
            domain, label = name.domain, name.label
            if name.split is not None and name.split != split:
                raise AsdError(f"{name.split} clip in a {split} folder: {path}")
            if name.split is None:  # eval test clip: the name says nothing
                if split == "train":
                    raise AsdError(f"training clip without domain and label in its name: {path}")
                domain, label = _lookup_truth(truth, machine, name.section, path)
            rows.append(
                {
                    "path": str(path),
                    "subset": subset,
                    "machine": machine,
                    "section": name.section,
                    "domain": domain,
                    "split": split,
                    "label": label,
                    "clip": path.name,
                    "attributes": name.attributes,
                }
            )
    return rows


def _wav_files(folder: Path) -> list[Path]:
    """The ``*.wav`` / ``*.WAV`` files of a folder; AsdError for a broken link or a folder."""
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.suffix.lower() != ".wav":
            continue
        if path.is_symlink() and not path.exists():
            raise AsdError(f"broken link {path} -> {os.readlink(path)}")
        if not path.is_file():
            raise AsdError(f"{path} is not a file (a folder named like a clip?)")
        found.append(path)
    return found


def _lookup_truth(
    truth: dict[tuple[str, str], dict[str, dict]], machine: str, section: int, path: Path
) -> tuple[str, str]:
    """(domain, label) of an eval test clip, 'unknown' where no ground truth was given."""
    if not truth:
        return "unknown", "unknown"
    key = (machine, f"{section:02d}")
    labels = truth.get(key, {}).get("label")
    domains = truth.get(key, {}).get("domain")
    label = labels.get(path.name) if labels else None
    domain = domains.get(path.name) if domains else None
    if labels is not None and label is None:
        raise AsdError(f"{path.name} is missing from the ground truth of {machine}")
    if labels is not None and domains is None:  # the official score needs each clip's domain
        raise AsdError(
            f"ground truth gives labels but no domains for {machine} section {section:02d}: "
            f"add domain/ground_truth_{machine}_section_{section:02d}_test.csv to the "
            "--ground-truth folder (rows clip,0 for source or clip,1 for target)"
        )
    if label is None:
        _note(
            "warn-truth",
            machine,
            f"no ground truth for {machine} section {section:02d}: labels stay 'unknown'",
        )
    return domain or "unknown", label or "unknown"


def _read_ground_truth(folder: Path) -> dict[tuple[str, str], dict[str, dict]]:
    """{(machine, section): {'label': {clip: ...}, 'domain': {clip: ...}}} from the CSVs."""
    if not folder.is_dir():
        raise AsdError(f"ground-truth folder not found: {folder}")
    truth: dict[tuple[str, str], dict[str, dict]] = {}
    for path in sorted(folder.rglob("*.csv")):
        match = _GROUND_TRUTH.match(path.name)
        rel = str(path.relative_to(folder)).lower()
        if not match or "attribute" in rel:
            continue
        kind = "domain" if "domain" in rel else "label"
        names = ("source", "target") if kind == "domain" else ("normal", "anomaly")
        values = _read_truth_file(path, names)
        key = (match["machine"], f"{int(match['section']):02d}")
        truth.setdefault(key, {})[kind] = values
    if not truth:
        raise AsdError(f"no ground_truth_<machine>_section_<nn>_test.csv files in {folder}")
    return truth


def _read_truth_file(path: Path, names: tuple[str, str]) -> dict[str, str]:
    """{clip: name} from one headerless ``clip,0|1`` CSV; AsdError for a bad or conflicting row."""
    values: dict[str, str] = {}
    seen: dict[str, tuple[int, list[str]]] = {}  # clip -> (row number, row) where first given
    try:
        with open(path, newline="") as handle:
            for line_no, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                if len(row) < 2 or row[1].strip() not in ("0", "1"):
                    raise AsdError(f"bad row {line_no} in ground truth {path}: {row}")
                clip, value = row[0].strip(), names[int(row[1].strip())]
                if clip in values and values[clip] != value:
                    first_no, first = seen[clip]
                    raise AsdError(
                        f"ground truth {path} gives clip {clip} twice with different values: "
                        f"row {first_no} {first} and row {line_no} {row}"
                    )
                values[clip] = value
                seen.setdefault(clip, (line_no, row))
    except OSError as exc:
        raise AsdError(f"cannot read ground truth {path}: {exc}") from None
    return values


def read_wav(path: str | Path, sample_rate: int, channel: int = 0) -> np.ndarray:
    """Mono float32 waveform (samples,) at ``sample_rate``: the one way clips are loaded.

    A multi-channel file gives its ``channel`` (``features.channel``; -1 averages them) and
    other rates are resampled, each noted once per machine type and rate.
    A silent (all-zero) clip is valid audio; a zero-length one is an error.
    """
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for broken files
        raise AsdError(f"cannot read {path}: {exc}") from None
    if wave.shape[0] == 0:
        raise AsdError(f"empty audio file {path}")
    mono = _one_channel(wave, channel, path)
    _check_samples(mono, rate, path)
    if rate != sample_rate:
        # Once per machine type and rate: a mixed-rate set would otherwise warn per file.
        machine = Path(path).parent.parent
        _note(
            "resample", (machine, rate),
            f"resampled {rate} Hz to {sample_rate} Hz: {path} (and any other {rate} Hz clip "
            f"of {machine.name}, not listed)",
        )  # fmt: skip
        mono = AF.resample(torch.from_numpy(mono), rate, sample_rate).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def _one_channel(wave: np.ndarray, channel: int, path: str | Path) -> np.ndarray:
    """(samples, channels) -> (samples,): the chosen channel, or the mean for -1."""
    n = wave.shape[1]
    if n == 1:
        return wave[:, 0]
    if not -1 <= channel < n:
        raise AsdError(f"features.channel={channel} but {path} has {n} channels")
    # One note per folder tree (a MIMII machine has thousands of 8-channel clips).
    parents = Path(path).parents
    where = str(parents[min(2, len(parents) - 1)])
    if channel == -1:
        message = f"mixed {n} channels down to mono (features.channel=-1), e.g. {path}"
        warn_once(log, message, key=("mix", n, where))
        return wave.mean(axis=1)
    message = f"used channel {channel} of {n} (features.channel; -1 mixes to mono), e.g. {path}"
    warn_once(log, message, key=("channel", n, channel, where))
    return wave[:, channel]


_MIN_PLAUSIBLE_RATE = 4000
"""Header rates below this are almost surely a broken header, not a recording."""


_FULL_SCALE = 0.999
"""|sample| at or above this counts as full scale (16-bit PCM peaks at 32767/32768)."""
_MAX_CLIPPED = 0.05
"""Share of full-scale samples above which a clip is reported as clipped."""


def _check_samples(mono: np.ndarray, rate: int, path: str | Path) -> None:
    """Refuse NaN/inf samples (they poison training and scoring far away); warn on odd clips."""
    finite = np.isfinite(mono)
    if not finite.all():
        raise AsdError(
            f"{path} has {int((~finite).sum())} NaN or infinite samples (of {len(mono)})"
        )
    if rate < _MIN_PLAUSIBLE_RATE:
        _note(
            "rate", path,
            f"{path}: header sample rate {rate} Hz makes it {len(mono) / rate:.0f} s long; "
            "is the header wrong?",
        )  # fmt: skip
    peak = float(np.abs(mono).max())
    if peak > 8.0:
        _note("loud", path, f"{path}: samples reach {peak:.3g} (full scale is 1.0)")
    elif len(mono) > 1 and peak > 0 and float(np.ptp(mono)) <= 1e-6 * peak:
        _note("dc", path, f"{path}: a constant (DC-only) signal, no sound to analyse")
    clipped = float(np.mean(np.abs(mono) >= _FULL_SCALE))
    if clipped > _MAX_CLIPPED:
        _note(
            "clipped", path,
            f"{path}: {100 * clipped:.0f} % of samples at full scale: a clipped recording, "
            "its spectrum is distorted",
        )  # fmt: skip


def _note(kind: str, about: object, message: str) -> None:
    """Log a warning about a file (or a group of files) once: features read a clip many times."""
    warn_once(log, message, key=(kind, str(about)))


def normal_train_mask(index: pd.DataFrame) -> np.ndarray:
    """Rows an encoder, a scorer and feature statistics may learn from: normal train clips."""
    return ((index["split"] == "train") & (index["label"] == "normal")).to_numpy()


def fingerprint(index: pd.DataFrame, hash_store: Path | None = None) -> str:
    """A hash of every clip's name and bytes: names the data set a result was computed on.

    ``hash_store`` (e.g. ``<workdir>/features/content-hashes.json``) makes repeated calls fast:
    only clips whose size, mtime or inode changed are read again (see asd.data.fingerprint).
    """
    return content_fingerprint(index, hash_store)
