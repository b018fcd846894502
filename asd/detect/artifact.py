"""The detector a sweep selects, fitted once and saved as one self-describing folder.

`asd evaluate` fits its scorers on the normal training clips every time; a plant needs the
opposite: the exact detector that was chosen, frozen, answering for new clips. A
:class:`Detector` is the members of ``cfg.scoring`` (:mod:`asd.detect.detector`) with their scorers
fitted per (machine, section), the out-of-fold training scores that standardise them, and the
decision thresholds. Its folder holds no pickle:

- ``detector.json``: format, flat config, feature config, members (frames, pooling, scorer),
  weights, combine, per-section thresholds, data fingerprint, code version;
- ``encoder.pt``: the encoder (``weights_only`` loading), when a member uses it;
- ``member<i>.json`` / ``member<i>.npz``: each member's fitted scorer (:mod:`asd.detect.state`);
- ``manifest.json``: the sha256 of every other file, so a changed or truncated artifact is
  refused with one clear error instead of scoring from damaged numbers.

Scores of a saved and loaded detector equal `asd evaluate`'s test scores: both fit the same
scorers on the same rows and combine them with :func:`asd.detect.detector.combine`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from asd import __version__
from asd.config import Config
from asd.data.index import normal_train_mask
from asd.detect.detector import DetectorSpec, Member, combine, detector_spec
from asd.detect.frames import pooled_vectors
from asd.detect.pipeline import MemberScores, make_scorer, scoring_for
from asd.detect.scorer import Key, SectionScorer, known
from asd.detect.standardise import section_stats, standardise
from asd.detect.state import export_state, merge, read_state, restore, write_state
from asd.errors import AsdError
from asd.features import FeatureSet, log_mel
from asd.staging import tmp_folder

if TYPE_CHECKING:
    from asd.model.encoder import Encoder

FORMAT = "asd-detector/1"
DETECTOR_FILE = "detector.json"
MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.pt"
OUTPUT_COLUMNS = ("anomaly_score", "decision", "threshold", "normal_z")
"""What scoring adds to each clip's row."""


@dataclass
class Detector:
    """A fitted detector: members with their scorers, thresholds and where they came from."""

    config: Config
    encoder: Encoder | None
    members: tuple[Member, ...]
    """Each member with its scorer named (never None)."""
    scorers: tuple[SectionScorer, ...]
    """Per member, its fitted per-section scorer."""
    weights: tuple[float, ...]
    combine: str
    thresholds: dict[Key, float]
    """Per section, the decision threshold of the (combined) score."""
    normal: dict[Key, tuple[float, float]]
    """Per section, (mean, std) of the normal training clips' (combined) scores: normal_z."""
    data_fingerprint: str = ""
    code_version: str = __version__
    history: list[str] = field(default_factory=list)
    """What was added since the sweep fitted it (``add-machine fan 00 from <fingerprint>``)."""

    def sections(self) -> list[Key]:
        """The (machine, section) pairs this detector can score."""
        return sorted(self.thresholds)

    def describe(self) -> str:
        """One line: the members and how they combine."""
        spec = DetectorSpec(self.members, self.weights, self.combine)
        return spec.describe(self.config.scoring.estimator)

    def check_sections(self, meta: pd.DataFrame) -> None:
        """AsdError naming the first row of a machine and section this detector never fitted."""
        have = set(self.thresholds)
        for i, (m, s) in enumerate(zip(meta["machine"], meta["section"], strict=True)):
            if (str(m), int(s)) not in have:
                raise AsdError(
                    f"row {i}: machine {m} section {int(s):02d} is not in this detector "
                    f"(known: {known(have)}); add it with `asd detector add-machine`"
                )

    def score_features(self, features: FeatureSet, device: str = "cpu") -> pd.DataFrame:
        """``features.index`` plus anomaly_score, decision, threshold, normal_z per clip."""
        meta = features.index.drop(columns=["offset", "frames"]).reset_index(drop=True)
        self.check_sections(meta)
        needed = [(m.frames, m.pool) for m in self.members]
        vectors = pooled_vectors(needed, features, self.encoder, device=device)
        parts = [
            MemberScores(
                s.score_samples(vectors[(m.frames, m.pool)], meta), s.train_scores_, {}, {}
            )
            for m, s in zip(self.members, self.scorers, strict=True)
        ]
        scores = combine(parts, self.weights, self.combine, meta, self.quantile)[0]
        keys = list(zip(meta["machine"].astype(str), meta["section"].astype(int), strict=True))
        limit = np.array([self.thresholds[k] for k in keys])
        out = meta.copy()
        out["anomaly_score"] = scores
        out["decision"] = (scores > limit).astype(int)
        out["threshold"] = limit
        out["normal_z"] = standardise(scores, meta, self.normal)
        return out

    def score(
        self, clips: Sequence[np.ndarray], meta: pd.DataFrame, device: str = "cpu"
    ) -> pd.DataFrame:
        """Score clips given as waveforms ``(samples,)`` at the feature rate or log-mels.

        A log-mel is ``(n_mels, frames)`` in dB; ``meta`` needs ``machine`` and ``section``.
        """
        cfg = self.config.features
        mels = []
        for clip in clips:
            x = np.asarray(clip, dtype=np.float32)
            if x.ndim == 1:
                x = log_mel(torch.from_numpy(x), cfg).numpy()  # (n_mels, frames)
            mels.append(x)
        frame = meta.reset_index(drop=True).copy()
        for column, value in (("domain", "unknown"), ("split", "test"), ("label", "unknown")):
            if column not in frame:
                frame[column] = value
        frame["section"] = frame["section"].astype(int)
        return self.score_features(FeatureSet.from_arrays(mels, frame, cfg), device)

    @property
    def quantile(self) -> float:
        """The training-score quantile that sets a combined threshold."""
        return self.config.scoring.threshold_quantile


# -------------------------------------------------------------------------- fit
def fit_detector(
    encoder: Encoder | None,
    features: FeatureSet,
    cfg: Config,
    data_fingerprint: str = "",
    device: str = "auto",
) -> Detector:
    """Fit ``cfg.scoring``'s detector on the normal training clips of ``features``."""
    spec = detector_spec(cfg.scoring)
    if spec.uses_encoder and encoder is None:
        raise AsdError(f"scoring.family '{cfg.scoring.family}' needs an encoder")
    members = tuple(replace(m, scorer=m.scorer or cfg.scoring.estimator) for m in spec.members)
    scorers, thresholds, normal = _fit_members(members, spec.weights, spec.combine, encoder,
                                               features, cfg, device)  # fmt: skip
    return Detector(
        config=cfg,
        encoder=encoder if spec.uses_encoder else None,
        members=members,
        scorers=scorers,
        weights=spec.weights,
        combine=spec.combine,
        thresholds=thresholds,
        normal=normal,
        data_fingerprint=data_fingerprint,
    )


def _fit_members(
    members: Sequence[Member],
    weights: Sequence[float],
    how: str,
    encoder: Encoder | None,
    features: FeatureSet,
    cfg: Config,
    device: str,
) -> tuple[tuple[SectionScorer, ...], dict[Key, float], dict[Key, tuple[float, float]]]:
    """Each member's scorer fitted on the normal train clips; thresholds and normal stats."""
    rows = normal_train_mask(features.index)
    if not rows.any():
        raise AsdError("no normal training clips to fit the detector on")
    train = features.subset(np.flatnonzero(rows))
    meta = train.index.drop(columns=["offset", "frames"]).reset_index(drop=True)
    vectors = pooled_vectors([(m.frames, m.pool) for m in members], train, encoder, device=device)
    scorers = tuple(
        make_scorer(scoring_for(cfg, str(m.scorer))).fit(vectors[(m.frames, m.pool)], meta)
        for m in members
    )
    parts = [MemberScores(np.zeros(0), s.train_scores_, {}, {}) for s in scorers]
    _, combined, thresholds = combine(
        parts, weights, how, meta.iloc[:0], cfg.scoring.threshold_quantile
    )
    return scorers, thresholds, section_stats(combined)


def add_machine(
    detector: Detector, features: FeatureSet, data_fingerprint: str, device: str = "auto"
) -> Detector:
    """A new detector: ``detector`` plus scorers fitted on the sections of ``features``.

    Only the normal training clips are used, with the same frames, pooling and scorer
    settings; the encoder stays frozen and every section the detector had keeps its state.
    """
    scorers, thresholds, normal = _fit_members(
        detector.members, detector.weights, detector.combine, detector.encoder, features,
        detector.config, device,
    )  # fmt: skip
    clash = sorted(set(thresholds) & set(detector.thresholds))
    if clash:
        raise AsdError(
            f"the detector already has machine/section {known(clash)}: add-machine only adds "
            "new ones"
        )
    merged = tuple(
        restore(merge(export_state(old), export_state(new)))
        for old, new in zip(detector.scorers, scorers, strict=True)
    )
    added = ", ".join(f"{m}/{s:02d}" for m, s in sorted(thresholds))
    return replace(
        detector,
        scorers=merged,
        thresholds={**detector.thresholds, **thresholds},
        normal={**detector.normal, **normal},
        history=[*detector.history, f"added {added} from data {data_fingerprint[:16]}"],
    )


# ------------------------------------------------------------------------- files
def save_detector(detector: Detector, folder: str | Path) -> Path:
    """Write the artifact folder (replacing one already there) atomically; returns it."""
    from asd.model.encoder import save_encoder  # torch model code only where an encoder is saved

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_folder(folder.parent, folder.name)
    try:
        if detector.encoder is not None:
            extra = {"data_fingerprint": detector.data_fingerprint, "code_version": __version__}
            save_encoder(detector.encoder, tmp / ENCODER_FILE, detector.config, extra)
        for i, scorer in enumerate(detector.scorers):
            write_state(export_state(scorer), tmp, f"member{i}")
        (tmp / DETECTOR_FILE).write_text(json.dumps(_describe(detector), indent=1))
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {"format": FORMAT, "files": {name: _sha256(tmp / name) for name in files}}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _describe(detector: Detector) -> dict:
    """detector.json: everything about the detector that is not an array."""
    return {
        "format": FORMAT,
        "code_version": __version__,
        "data_fingerprint": detector.data_fingerprint,
        "config": detector.config.to_flat(),
        "features": {k: v for k, v in detector.config.to_flat().items()
                     if k.startswith("features.")},
        "description": detector.describe(),
        "members": [
            {"frames": m.frames, "pool": m.pool, "scorer": m.scorer, "state": f"member{i}"}
            for i, m in enumerate(detector.members)
        ],
        "weights": list(detector.weights),
        "combine": detector.combine,
        "uses_encoder": detector.encoder is not None,
        "sections": [
            {"machine": m, "section": s, "threshold": detector.thresholds[(m, s)],
             "normal_mean": detector.normal[(m, s)][0], "normal_std": detector.normal[(m, s)][1]}
            for m, s in detector.sections()
        ],
        "history": list(detector.history),
    }  # fmt: skip


def load_detector(folder: str | Path, map_location: str = "cpu") -> Detector:
    """Inverse of :func:`save_detector`, after checking every file against the manifest."""
    folder = Path(folder)
    check_manifest(folder)
    try:
        info = json.loads((folder / DETECTOR_FILE).read_text())
        if info.get("format") != FORMAT:
            raise AsdError(f"{folder} is not an {FORMAT} artifact (format {info.get('format')!r})")
        cfg = Config.from_flat(info["config"])
        members = tuple(Member(m["frames"], m["pool"], m["scorer"]) for m in info["members"])
        scorers = tuple(restore(read_state(folder, m["state"])) for m in info["members"])
        sections = {(str(s["machine"]), int(s["section"])): s for s in info["sections"]}
        thresholds = {k: float(s["threshold"]) for k, s in sections.items()}
        normal = {k: (float(s["normal_mean"]), float(s["normal_std"])) for k, s in sections.items()}
        weights, how = tuple(float(w) for w in info["weights"]), str(info["combine"])
    except (KeyError, TypeError, ValueError) as err:
        raise AsdError(f"detector artifact {folder} is incomplete: {err}") from None
    encoder = None
    if info.get("uses_encoder"):
        from asd.model.encoder import load_encoder

        encoder = load_encoder(folder / ENCODER_FILE, map_location)[0]
    return Detector(
        cfg, encoder, members, scorers, weights, how, thresholds, normal,
        str(info.get("data_fingerprint", "")), str(info.get("code_version", "")),
        list(info.get("history", [])),
    )  # fmt: skip


def check_manifest(folder: Path) -> None:
    """AsdError unless every file the manifest lists is there with its recorded sha256."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise AsdError(f"{folder} is not a detector artifact: no {MANIFEST_FILE}")
    try:
        manifest = json.loads(path.read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AsdError(f"detector artifact {folder}: unreadable {MANIFEST_FILE} ({err})") from None
    for name, digest in sorted(files.items()):
        if not (folder / name).is_file():
            raise AsdError(f"detector artifact {folder} is incomplete: {name} is missing")
        if _sha256(folder / name) != digest:
            raise AsdError(
                f"detector artifact {folder}: {name} does not match its manifest (changed or "
                "truncated); fetch the artifact again"
            )
    if DETECTOR_FILE not in files:
        raise AsdError(f"detector artifact {folder}: the manifest does not list {DETECTOR_FILE}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
