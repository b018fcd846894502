"""The data sets users have: detect a tree's layout and read it into the one clip index.

Every layout becomes the table :func:`asd.data.index.index_dataset` returns
(``asd.data.index.COLUMNS``), so
features, training and scoring never ask which set a clip came from:

- ``dcase2020``: ``<machine>/{train,test}/{normal,anomaly}_id_NN_NNNNNNNN.wav`` (eval test
  clips ``id_NN_NNNNNNNN.wav``); section = machine id; one domain ('source'). Train and test
  reuse the same names, so names are unique per split only.
- ``dcase2021``: ``<machine>/{train,source_test,target_test}/section_NN_<domain>_...wav``.
- ``dcase2022`` / ``dcase2023`` / ``dcase2024``: ``<machine>/{train,test}/section_NN_...wav``
  with attributes in the names (read by :mod:`asd.data.index`); ``attributes_NN.csv`` beside
  ``train/`` fill in attributes a name leaves out (2024's ``noAttribute`` machines).
- ``mimii``: ``[<snr>_dB_<machine>/]<machine>/id_NN/{normal,abnormal}/NNNNNNNN.wav``,
  8-channel; each noise level is its own machine type (``fan_-6dB``): the levels are the same
  recordings with more or less factory noise, so mixing them would test on trained sounds.
- ``toyadmos``: ``<machine>/caseN/{NormalSound_IND,AnomalousSound_IND}/*.wav``; one file per
  microphone (``_ch1_``...), of which channel 1 is read; section = case number.

MIMII and ToyADMOS ship no train/test split: :func:`write_split` writes a small manifest
(``asd_split.json`` in the data folder, :mod:`asd.data.split`) that the reader then follows.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from asd.data import index as data
from asd.data.split import apply_split, save_split, split_manifest
from asd.errors import AsdError, warn_once

log = logging.getLogger(__name__)

TOYADMOS_CHANNEL = 1
"""ToyADMOS stores one file per microphone; the files of this channel (``_ch1_``) are read."""


@dataclass(frozen=True)
class Layout:
    """A known data-set layout: how to name it, how many domains, where its split comes from."""

    name: str
    title: str
    domains: int
    """1: every clip is 'source' and scored by AUC and pAUC; 2: the DCASE 2023 score."""
    needs_split: bool
    """True where the set has no train/test split and ``asd data split`` makes one."""


LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout("dcase2020", "DCASE 2020 Task 2", 1, False),
        Layout("dcase2021", "DCASE 2021 Task 2", 2, False),
        Layout("dcase2022", "DCASE 2022 Task 2", 2, False),
        Layout("dcase2023", "DCASE 2023 Task 2", 2, False),
        Layout("dcase2024", "DCASE 2024 Task 2", 2, False),
        Layout("mimii", "MIMII", 1, True),
        Layout("toyadmos", "ToyADMOS", 1, True),
    )
}
"""Every layout :func:`detect_layout` can report, by name."""

DCASE2024_EVAL_MACHINES = (
    "3DPrinter",
    "AirCompressor",
    "BrushlessMotor",
    "HairDryer",
    "HoveringDrone",
    "RoboticArm",
    "Scanner",
    "ToothBrush",
    "ToyCircuit",
)
"""Machine types only DCASE 2024 has: their presence names the year."""

_NAME_2020 = re.compile(r"^(?:(?P<label>normal|anomaly)_)?id_(?P<id>\d+)_(?P<index>\d+)\.wav$")
_EVAL_2021 = re.compile(r"^section_(?P<section>\d+)_(?:(?P<domain>source|target)_test_)?\d+\.wav$")
_SNR_DIR = re.compile(r"^(?P<snr>-?\d+)_dB_(?P<machine>.+)$")
_ID_DIR = re.compile(r"^id_(?P<id>\d+)$")
_CASE_DIR = re.compile(r"^case(?P<case>\d+)$")
_CHANNEL = re.compile(r"_ch(?P<ch>\d+)_")
_MIMII_LABELS = {"normal": "normal", "abnormal": "anomaly"}


# --------------------------------------------------------------------------- detection


def detect_layout(root: str | Path) -> Layout:
    """The layout of the tree at ``root``; AsdError naming the folder when none fits."""
    root = Path(root)
    if not root.is_dir():
        raise AsdError(f"data folder not found: {root}")
    if _mimii_machines(root):
        return LAYOUTS["mimii"]
    machine_dirs = [folder for _, folder in _machine_dirs(root)]
    if any(_toyadmos_cases(folder) for folder in machine_dirs):
        return LAYOUTS["toyadmos"]
    if any((f / "source_test").is_dir() or (f / "target_test").is_dir() for f in machine_dirs):
        return LAYOUTS["dcase2021"]
    names = [p.name for f in machine_dirs for s in ("train", "test") for p in _wavs(f / s)]
    if names and all(_NAME_2020.match(n) for n in names):
        return LAYOUTS["dcase2020"]
    if names and any(n.startswith("section_") for n in names):
        return LAYOUTS[_section_year(machine_dirs, names)]
    raise AsdError(
        f"no known data layout in {root}: expected DCASE (dev_data/<machine>/train/...), "
        "MIMII (<snr>_dB_<machine>/<machine>/id_NN/normal/) or ToyADMOS "
        "(<machine>/case1/NormalSound_IND/)"
    )


def _section_year(machine_dirs: list[Path], names: list[str]) -> str:
    """2022, 2023 or 2024: read alike, told apart by machine types, sections and noAttribute."""
    if any(f.name in DCASE2024_EVAL_MACHINES for f in machine_dirs) or any(
        "noAttribute" in n for n in names
    ):
        return "dcase2024"
    sections: dict[str, set[str]] = {}
    for folder in machine_dirs:
        for split in ("train", "test"):
            for path in _wavs(folder / split):
                sections.setdefault(folder.name, set()).add(path.name.split("_")[1])
    return "dcase2022" if any(len(s) > 1 for s in sections.values()) else "dcase2023"


def _machine_dirs(root: Path) -> list[tuple[str, Path]]:
    """(subset, machine folder) of a DCASE-style tree: under dev_data/eval_data (raw/) or root."""
    bases = [(s, root / s) for s in data.SUBSETS if (root / s).is_dir()]
    if not bases:
        bases = [(root.name if root.name in data.SUBSETS else "dev_data", root)]
    found = []
    for subset, base in bases:
        base = base / "raw" if (base / "raw").is_dir() else base
        found += [(subset, p) for p in sorted(base.iterdir()) if p.is_dir()]
    return found


def _wavs(folder: Path) -> list[Path]:
    return data._wav_files(folder) if folder.is_dir() else []


# --------------------------------------------------------------------------- reading


def index_data(
    root: str | Path,
    machines: list[str] | tuple[str, ...] | None = None,
    ground_truth: str | Path | None = None,
) -> pd.DataFrame:
    """One row per clip of the tree at ``root``, whatever its layout (``asd.data.index.COLUMNS``).

    ``machines`` keeps those machine types; ``ground_truth`` labels DCASE eval test clips (as in
    :func:`asd.data.index.index_dataset`). MIMII and ToyADMOS need the manifest of
    :func:`make_split`.
    """
    root = Path(root)
    layout = detect_layout(root)
    if layout.name in ("dcase2022", "dcase2023", "dcase2024"):
        index = data.index_dataset(root, machines=machines, ground_truth=ground_truth)
        return _merge_attribute_csvs(index)
    if layout.name == "dcase2020":
        rows = [r for s, f in _machine_dirs(root) for r in _rows_2020(s, f)]
    elif layout.name == "dcase2021":
        truth = data._read_ground_truth(Path(ground_truth)) if ground_truth is not None else {}
        rows = [r for s, f in _machine_dirs(root) for r in _rows_2021(s, f, truth)]
    else:
        rows = apply_split(_unsplit_rows(root, layout), root, layout.title)
    return _finish(pd.DataFrame(rows, columns=data.COLUMNS), machines, root, layout)


def _finish(
    index: pd.DataFrame, machines: list[str] | tuple[str, ...] | None, root: Path, layout: Layout
) -> pd.DataFrame:
    """Keep ``machines``, check names are unique where the layout says, sort like asd.data.index."""
    if index.empty:
        raise AsdError(f"no clips found in {root} ({layout.title} layout)")
    found = sorted(set(index["machine"]))
    if machines is not None:
        unknown = [m for m in machines if m not in found]
        if unknown:
            raise AsdError(
                f"machine type(s) {', '.join(unknown)} not found in {root} "
                f"(found: {', '.join(found)})"
            )
        index = index[index["machine"].isin(list(machines))]
    check_unique_names(index, layout)
    index = index.sort_values(["subset", "machine", "section", "split", "clip"], kind="stable")
    return index.reset_index(drop=True)


def check_unique_names(index: pd.DataFrame, layout: Layout) -> None:
    """The same-name guard: a clip name may appear once per machine (per split in DCASE 2020).

    DCASE 2020 reuses ``normal_id_00_00000000.wav`` in train and test (different recordings),
    so there the key is (machine, split, name); elsewhere a name in both splits is one clip
    listed twice, which would test on a training clip.
    """
    keys = (
        ["subset", "machine", "split", "clip"]
        if layout.name == "dcase2020"
        else ["subset", "machine", "clip"]
    )
    dup = index[index.duplicated(keys, keep=False)]
    if len(dup):
        first = dup.sort_values(keys).head(2)["path"].tolist()
        raise AsdError(f"clip name {Path(first[0]).name} appears twice: {first[0]} and {first[1]}")


def _row(path: Path, subset: str, machine: str, section: int, split: str | None, **kw: object):
    """An index row (dict) with the one-domain defaults."""
    row: dict[str, object] = {
        "path": str(path),
        "subset": subset,
        "machine": machine,
        "section": section,
        "domain": "source",
        "split": split,
        "label": "unknown",
        "clip": path.name,
        "attributes": {},
    }
    row.update(kw)
    return row


def _rows_2020(subset: str, folder: Path) -> list[dict]:
    """DCASE 2020 rows of one machine folder: section = machine id, one domain."""
    rows = []
    for split in ("train", "test"):
        for path in _wavs(folder / split):
            match = _NAME_2020.match(path.name)
            if not match:
                raise AsdError(f"file name outside the DCASE 2020 pattern: {path}")
            label = match["label"] or "unknown"  # eval test clips: id_NN_NNNNNNNN.wav
            if split == "train" and label != "normal":
                raise AsdError(f"{label} clip in a train folder: {path}")
            rows.append(_row(path, subset, folder.name, int(match["id"]), split, label=label))
    if not any(r["split"] == "train" for r in rows):
        raise AsdError(f"no training clips in {folder / 'train'}")
    return rows


def _rows_2021(subset: str, folder: Path, truth: dict) -> list[dict]:
    """DCASE 2021 rows: train/ plus source_test/ and target_test/ (the domain is the folder)."""
    rows = []
    for sub in ("train", "source_test", "target_test"):
        split, folder_domain = ("train", None) if sub == "train" else ("test", sub.split("_")[0])
        for path in _wavs(folder / sub):
            eval_name = _EVAL_2021.match(path.name)
            if eval_name:  # eval test clip: no label in the name
                domain, label = data._lookup_truth(
                    truth, folder.name, int(eval_name["section"]), path
                )
                row = _row(
                    path,
                    subset,
                    folder.name,
                    int(eval_name["section"]),
                    split,
                    domain=folder_domain or domain,
                    label=label,
                )
            else:
                name = data.parse_clip_name(str(path))
                if name.split != split or (folder_domain and name.domain != folder_domain):
                    raise AsdError(f"{name.domain} {name.split} clip in folder {sub}: {path}")
                row = _row(
                    path,
                    subset,
                    folder.name,
                    name.section,
                    split,
                    domain=name.domain,
                    label=name.label,
                    attributes=name.attributes,
                )
            rows.append(row)
    if not any(r["split"] == "train" for r in rows):
        raise AsdError(f"no training clips in {folder / 'train'}")
    return rows


def _merge_attribute_csvs(index: pd.DataFrame) -> pd.DataFrame:
    """Fill attributes a name leaves out from ``<machine>/attributes_NN.csv`` (DCASE 2022-2024).

    The names win where both speak; a disagreement is noted once per machine folder.
    """
    tables: dict[Path, dict[str, dict[str, str]]] = {}
    merged = []
    for path, attrs in zip(index["path"], index["attributes"], strict=True):
        folder = Path(path).parent.parent
        if folder not in tables:
            tables[folder] = _read_attribute_csvs(folder)
        given = tables[folder].get(Path(path).name)
        if given and attrs and given != attrs:
            warn_once(
                log,
                f"{folder}: attributes_*.csv and the file names disagree "
                f"(e.g. {Path(path).name}); the names are used",
                key=("attrs", str(folder)),
            )
        merged.append(attrs or given or {})
    index = index.copy()
    index["attributes"] = merged
    return index


def _read_attribute_csvs(folder: Path) -> dict[str, dict[str, str]]:
    """{file name: {key: value}} from a machine folder's ``attributes_NN.csv`` files.

    Columns ``file_name, d1p, d1v, d2p, d2v, ...`` (key, value pairs); empty keys and
    ``noAttribute`` carry nothing.
    """
    table: dict[str, dict[str, str]] = {}
    for path in sorted(folder.glob("attributes_*.csv")):
        try:
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    name = Path(str(row.get("file_name") or "")).name
                    if not name:
                        raise AsdError(f"{path}: a row without file_name: {row}")
                    pairs = {}
                    for i in range(1, len(row)):
                        key, value = row.get(f"d{i}p"), row.get(f"d{i}v")
                        if key and key.strip() and key.strip() != "noAttribute":
                            pairs[key.strip()] = (value or "").strip()
                    table[name] = pairs
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            raise AsdError(f"cannot read attribute file {path}: {exc}") from None
    return table


# --------------------------------------------------------------------------- unsplit sets


def _unsplit_rows(root: Path, layout: Layout) -> list[dict]:
    """MIMII / ToyADMOS rows with ``split`` None and a ``key`` naming the recording."""
    if layout.name == "mimii":
        return [r for snr, m, f in _mimii_machines(root) for r in _mimii_rows(snr, m, f)]
    rows = []
    for _, folder in _machine_dirs(root):
        for case, case_dir in _toyadmos_cases(folder):
            rows += _toyadmos_rows(folder.name, case, case_dir)
    return rows


def _mimii_machines(root: Path) -> list[tuple[str | None, str, Path]]:
    """(noise level or None, machine, machine folder holding id_NN/) of a MIMII tree."""

    def holds_ids(folder: Path) -> bool:
        return folder.is_dir() and any(
            _ID_DIR.match(p.name) and p.is_dir() for p in folder.iterdir()
        )

    found = []
    own = _SNR_DIR.match(root.name)  # root may be one noise level's folder itself
    if own and holds_ids(root / own["machine"]):
        return [(own["snr"], own["machine"], root / own["machine"])]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        snr = _SNR_DIR.match(folder.name)
        if snr and holds_ids(folder / snr["machine"]):
            found.append((snr["snr"], snr["machine"], folder / snr["machine"]))
        elif holds_ids(folder) and _is_mimii_machine(folder):
            found.append((None, folder.name, folder))
    return found


def _is_mimii_machine(folder: Path) -> bool:
    """A machine folder of id_NN/ folders, each with normal/ or abnormal/ inside."""
    ids = [p for p in folder.iterdir() if _ID_DIR.match(p.name) and p.is_dir()]
    return any((p / label).is_dir() for p in ids for label in _MIMII_LABELS)


def _mimii_rows(snr: str | None, machine: str, folder: Path) -> list[dict]:
    """Rows of one MIMII machine folder; clips named like DCASE 2020 (normal_id_00_0000.wav)."""
    name = machine if snr is None else f"{machine}_{snr}dB"
    attributes = {} if snr is None else {"snr": f"{snr}dB"}
    rows = []
    for id_dir in sorted(p for p in folder.iterdir() if _ID_DIR.match(p.name) and p.is_dir()):
        section = int(id_dir.name.split("_")[1])
        for sub, label in _MIMII_LABELS.items():
            for path in _wavs(id_dir / sub):
                row = _row(
                    path,
                    "mimii",
                    name,
                    section,
                    None,
                    label=label,
                    clip=f"{label}_{id_dir.name}_{path.name}",
                    attributes=attributes,
                )
                row["key"] = f"{machine}/{id_dir.name}/{sub}/{path.name}"
                rows.append(row)
    return rows


def _toyadmos_cases(folder: Path) -> list[tuple[int, Path]]:
    """(case number, case folder) of a ToyADMOS-style machine folder."""
    cases = []
    for case_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        match = _CASE_DIR.match(case_dir.name)
        if match and any(_toyadmos_label(p.name) for p in case_dir.iterdir() if p.is_dir()):
            cases.append((int(match["case"]), case_dir))
    return cases


def _toyadmos_label(folder_name: str) -> str | None:
    """'normal' / 'anomaly' for a ToyADMOS clip folder; None for continuous or noise recordings."""
    name = folder_name.lower()
    if name in ("normalsound_ind", "normal"):
        return "normal"
    if name in ("anomaloussound_ind", "anomaly", "abnormal"):
        return "anomaly"
    return None


def _toyadmos_rows(machine: str, case: int, case_dir: Path) -> list[dict]:
    """Rows of one case folder: individual clips of channel ``TOYADMOS_CHANNEL`` only."""
    rows = []
    for sub in sorted(p for p in case_dir.iterdir() if p.is_dir()):
        label = _toyadmos_label(sub.name)
        if label is None:
            log.info("skipped %s: not a folder of individual normal/anomalous clips", sub)
            continue
        for path in _wavs(sub):
            channel = _CHANNEL.search(path.name)
            if channel and int(channel["ch"]) != TOYADMOS_CHANNEL:
                continue
            row = _row(path, "toyadmos", machine, case, None, label=label)
            row["key"] = f"{machine}/{case_dir.name}/{sub.name}/{path.name}"
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- the split


def make_split(root: str | Path, seed: int = 0, test_fraction: float | None = None) -> dict:
    """The train/test manifest of the MIMII / ToyADMOS tree at ``root`` (:mod:`asd.data.split`)."""
    root = Path(root)
    layout = detect_layout(root)
    if not layout.needs_split:
        raise AsdError(f"{root} is a {layout.title} tree: it has its own train/test split")
    rows = _unsplit_rows(root, layout)
    if not rows:
        raise AsdError(f"no clips found in {root} ({layout.title} layout)")
    return split_manifest(rows, layout.name, seed, test_fraction)


def write_split(
    root: str | Path, seed: int = 0, test_fraction: float | None = None, overwrite: bool = False
) -> tuple[Path, dict]:
    """Write :func:`make_split`'s manifest to ``<root>/asd_split.json`` and return both."""
    manifest = make_split(root, seed, test_fraction)
    return save_split(Path(root), manifest, overwrite), manifest
