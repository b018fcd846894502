"""The detector a trial is: members (frames -> pooling -> scorer), standardised and combined.

One path for every family: each *member* pools a clip's frames over time (the log-mel's own
frames, untrained, or the encoder's per-time-step features) and fits a per-section scorer on
the normal training clips; a detector of several members standardises each member's scores by
its out-of-fold normal-training scores per section (``z``) and combines them by the max or the
(weighted) mean of z, with the decision threshold a quantile of the combined out-of-fold
training scores. ``scoring.family`` names the members:

- ``encoder``: the encoder, pooled by ``scoring.pool`` ('own' = the paper's detector);
- ``reference``: the untrained log-mel pooled by ``scoring.reference``;
- ``fusion``: both, ``fusion_weight * z_encoder + (1 - fusion_weight) * z_reference``;
- ``ensemble``: ``scoring.members``, combined by ``scoring.combine``.

Every evaluation also scores the two untrained references (log-mel clip mean; mean + std) on
the same clips, scorer and split, because with tens of clips they are hard to beat and a user
must see whether a detector earns its cost: they are the ``reference`` and
``reference_meanstd`` companions, ``encoder`` is the encoder alone beside a detector that uses
it, and ``vs_reference.<scorer>.hmean`` is the detector minus the stronger reference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from asd.config import ALWAYS_SCORED, Config, ScoringConfig
from asd.data.index import normal_train_mask
from asd.detect.frames import pooled_vectors
from asd.detect.mahalanobis import write_submission
from asd.detect.metrics import harmonic_mean
from asd.detect.pipeline import (
    REFERENCE_COMPANIONS,
    EstimatorResult,
    Evaluation,
    MemberScores,
    labelled_test_mask,
    score_vectors,
    scored_result,
    scoring_for,
)
from asd.detect.standardise import Stats, section_stats, standardise
from asd.errors import AsdError

if TYPE_CHECKING:
    from asd.features import FeatureSet
    from asd.model.encoder import Encoder

Key = tuple[str, int]

REFERENCES = dict(zip(REFERENCE_COMPANIONS, ("mean", "meanstd"), strict=True))
"""The untrained yardsticks every evaluation reports: companion name -> log-mel pooling."""


@dataclass(frozen=True)
class Member:
    """One member: frames pooled over time, scored per section."""

    frames: str
    """'logmel' (untrained) or 'encoder' (the trained encoder's per-time-step features)."""
    pool: str
    """Pooling spec (:mod:`asd.detect.pooling`), or 'own' for the encoder's own pooling."""
    scorer: str | None = None
    """A fixed scorer, or None: the scorer the evaluation is running."""

    @property
    def name(self) -> str:
        """The member's spec, ``frames/pool[/scorer]``."""
        return "/".join([self.frames, self.pool] + ([self.scorer] if self.scorer else []))


@dataclass(frozen=True)
class DetectorSpec:
    """The members of a detector, their weights and how their z-scores combine."""

    members: tuple[Member, ...]
    weights: tuple[float, ...]
    combine: str

    def describe(self, estimator: str) -> str:
        """One line: what this detector is when run with ``estimator``."""
        names = [f"{m.frames}/{m.pool}/{m.scorer or estimator}" for m in self.members]
        if len(names) == 1:
            return names[0]
        if self.combine == "mean" and len(set(self.weights)) > 1:
            parts = [f"{w:g}*{n}" for w, n in zip(self.weights, names, strict=True)]
            return "weighted mean of z: " + " + ".join(parts)
        return f"{self.combine} of z over " + ", ".join(names)

    @property
    def uses_encoder(self) -> bool:
        """Whether any member needs the trained encoder."""
        return any(m.frames == "encoder" for m in self.members)


def parse_member(spec: str) -> Member:
    """A :class:`Member` from ``frames/pool[/scorer]`` (checked by the config already)."""
    parts = spec.split("/")
    return Member(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def detector_spec(scoring: ScoringConfig) -> DetectorSpec:
    """The members ``scoring.family`` names (see the module docstring)."""
    encoder = Member("encoder", scoring.pool)
    reference = Member("logmel", scoring.reference)
    if scoring.family == "encoder":
        return DetectorSpec((encoder,), (1.0,), "mean")
    if scoring.family == "reference":
        return DetectorSpec((reference,), (1.0,), "mean")
    if scoring.family == "fusion":
        w = scoring.fusion_weight
        return DetectorSpec((encoder, reference), (w, 1.0 - w), "mean")
    members = tuple(parse_member(m) for m in scoring.members)
    return DetectorSpec(members, tuple(1.0 for _ in members), scoring.combine)


def reported_scorers(cfg: Config) -> tuple[str, ...]:
    """The scorers an evaluation runs: the paper's two and the configured one."""
    return tuple(dict.fromkeys((*ALWAYS_SCORED, cfg.scoring.estimator)))


MemberCache = dict[str, MemberScores]
"""Untrained members' scores, kept by a caller across epochs (they never change)."""


def evaluate_detector(
    encoder: Encoder | None,
    features: FeatureSet,
    cfg: Config,
    estimators: Sequence[str] | None = None,
    machines: Sequence[str] | None = None,
    out_dir: Path | None = None,
    device: str = "auto",
    companions: bool = True,
    progress: bool = False,
    cache: MemberCache | None = None,
    learned_folds: int | None = None,
) -> Evaluation:
    """Score the detector ``cfg.scoring`` describes with each scorer, references beside it.

    ``companions=False`` scores the detector alone (a cheap per-epoch validation). ``cache``
    keeps untrained members' scores between calls on the same clips. ``learned_folds``
    overrides ``scoring.threshold_folds`` for encoder members only (a per-epoch estimate
    refits those every epoch; untrained ones come from the cache). With ``out_dir``, the
    detector's submission CSVs go to ``out_dir/<estimator>/``.
    """
    spec = detector_spec(cfg.scoring)
    if spec.uses_encoder and encoder is None:
        raise AsdError(f"scoring.family '{cfg.scoring.family}' needs an encoder")
    subset = _machines(features, machines)
    estimators = tuple(estimators or reported_scorers(cfg))
    extra = _companion_members(spec, cfg.scoring, encoder is not None) if companions else {}
    needed = [(m.frames, m.pool) for m in spec.members]
    needed += [(m.frames, m.pool) for group in extra.values() for m in group.members]
    vectors = pooled_vectors(needed, subset, encoder, device=device, progress=progress)
    scorer = _MemberScorer(vectors, subset.index, cfg, cache, learned_folds)
    result = scorer.evaluate(spec, estimators)
    result.description = spec.describe(cfg.scoring.estimator)
    result.companions = {name: scorer.evaluate(s, estimators) for name, s in extra.items()}
    if len(spec.members) > 1:
        result.members = {
            m.name: scorer.evaluate(DetectorSpec((m,), (1.0,), "mean"), estimators)
            for m in spec.members
        }
    if out_dir is not None:
        for name, res in result.by_estimator.items():
            scores = res.results["anomaly_score"].to_numpy()
            write_submission(Path(out_dir) / name, res.results, scores, res.results["decision"])
    return result


def evaluate_reference(
    features: FeatureSet,
    cfg: Config,
    estimators: Sequence[str] | None = None,
    machines: Sequence[str] | None = None,
) -> Evaluation:
    """The untrained reference (log-mel pooled by ``cfg.scoring.reference``) alone."""
    ref = cfg.with_overrides({"scoring.family": "reference"})
    return evaluate_detector(None, features, ref, estimators, machines, companions=False)


def _companion_members(
    spec: DetectorSpec, scoring: ScoringConfig, have_encoder: bool
) -> dict[str, DetectorSpec]:
    """The yardsticks beside a detector: both references, and the encoder alone if given.

    The encoder alone shows beside an untrained detector too: does the learned part earn
    its cost?
    """
    out = {
        name: DetectorSpec((Member("logmel", pool),), (1.0,), "mean")
        for name, pool in REFERENCES.items()
    }
    if have_encoder:  # scored once: the encoder family's detector is the same member
        out["encoder"] = DetectorSpec((Member("encoder", scoring.pool),), (1.0,), "mean")
    return out


class _MemberScorer:
    """Fits and scores members on one set of pooled vectors, each (member, scorer) once."""

    def __init__(
        self,
        vectors: dict[tuple[str, str], np.ndarray],
        index: pd.DataFrame,
        cfg: Config,
        cache: MemberCache | None,
        learned_folds: int | None = None,
    ) -> None:
        self.vectors, self.cfg, self.learned_folds = vectors, cfg, learned_folds
        self.index = index.reset_index(drop=True)
        self.fit_rows = normal_train_mask(self.index)
        self.test_rows = (self.index["split"] == "test").to_numpy()
        if not self.test_rows.any():
            raise AsdError("no test clips to score (check --data and the machine lists)")
        self.meta_fit = self.index.loc[self.fit_rows].reset_index(drop=True)
        self.meta_test = self.index.loc[self.test_rows].reset_index(drop=True)
        self.labelled = labelled_test_mask(self.index)[self.test_rows]
        self.cache: MemberCache = {} if cache is None else cache
        self.local: MemberCache = {}

    def evaluate(self, spec: DetectorSpec, estimators: Sequence[str]) -> Evaluation:
        """Every scorer's result of ``spec``."""
        by_estimator = {e: self._result(spec, e) for e in estimators}
        return Evaluation(by_estimator, description=spec.describe(self.cfg.scoring.estimator))

    def _result(self, spec: DetectorSpec, estimator: str) -> EstimatorResult:
        parts = [self._member(m, m.scorer or estimator) for m in spec.members]
        quantile = self.cfg.scoring.threshold_quantile
        scores, train, thresholds = combine(
            parts, spec.weights, spec.combine, self.meta_test, quantile
        )
        fallbacks = {k: why for p in parts for k, why in p.fallbacks.items()}
        part = MemberScores(scores, train, thresholds, fallbacks)
        return scored_result(estimator, self.meta_test, self.labelled, part)

    def _member(self, member: Member, scorer: str) -> MemberScores:
        scoring = scoring_for(self.cfg, scorer)
        key = f"{member.frames}/{member.pool}/{scorer}"
        if member.frames == "logmel":  # untrained: the same on every call with these settings
            key += "|" + json.dumps(_scoring_key(scoring), sort_keys=True)
            key += "|" + ",".join(sorted(set(self.index["machine"].astype(str))))
            store = self.cache
        else:
            store = self.local
            if self.learned_folds is not None:
                scoring = replace(scoring, threshold_folds=self.learned_folds)
        if key not in store:
            store[key] = score_vectors(
                self.vectors[(member.frames, member.pool)], self.index, self.fit_rows,
                self.test_rows, scoring,
            )
        return store[key]


def _scoring_key(scoring: ScoringConfig) -> dict[str, Any]:
    """The scoring settings a member's scores depend on (not the detector's own choices)."""
    flat = {k: v for k, v in scoring.__dict__.items()}
    for name in ("family", "pool", "reference", "members", "combine", "fusion_weight"):
        flat.pop(name, None)
    return flat


def combine(
    parts: Sequence[MemberScores],
    weights: Sequence[float],
    how: str,
    meta: pd.DataFrame,
    quantile: float,
) -> tuple[np.ndarray, dict[Key, np.ndarray], dict[Key, float]]:
    """(test scores, training scores, thresholds) of members standardised and combined.

    Each member's scores become z-scores by the mean and spread of its own out-of-fold
    training scores per section; ``how`` is 'max' (any member that finds the clip odd) or
    'mean' (weighted by ``weights``). The training clips are combined the same way (the
    members were fitted on the same rows), and their ``quantile`` is the threshold. One member
    is its own scores, unstandardised (the scorer's thresholds are the same quantile).
    """
    if how not in ("max", "mean"):
        raise AsdError(f"scoring.combine must be 'max' or 'mean', got {how!r}")
    if len(parts) == 1:
        own = {k: np.asarray(v, dtype=float) for k, v in parts[0].train_scores.items()}
        limits = {k: float(np.quantile(v, quantile)) for k, v in own.items()}
        return np.asarray(parts[0].scores, dtype=float), own, limits
    stats: list[Stats] = [section_stats(p.train_scores) for p in parts]
    z_test = np.stack([standardise(p.scores, meta, s) for p, s in zip(parts, stats, strict=True)])
    train: dict[Key, np.ndarray] = {}
    for key in parts[0].train_scores:
        rows = [
            (np.asarray(p.train_scores[key], dtype=float) - s[key][0]) / s[key][1]
            for p, s in zip(parts, stats, strict=True)
        ]
        train[key] = _reduce(np.stack(rows), weights, how)
    thresholds = {key: float(np.quantile(v, quantile)) for key, v in train.items()}
    return _reduce(z_test, weights, how), train, thresholds


def _reduce(z: np.ndarray, weights: Sequence[float], how: str) -> np.ndarray:
    """(members, n) -> (n,): the max, or the weighted mean (weights normalised to sum 1)."""
    if how == "max":
        return np.asarray(z.max(axis=0))
    w = np.asarray(weights, dtype=float)
    return np.asarray((w[:, None] * z).sum(axis=0) / w.sum())


def _machines(features: FeatureSet, machines: Sequence[str] | None) -> FeatureSet:
    """The clips of ``machines`` (all when None)."""
    if machines is None:
        return features
    keep = features.index["machine"].isin(list(machines)).to_numpy()
    if not keep.any():
        raise AsdError(f"no clips of machine type(s) {', '.join(machines)} in the data")
    return features if keep.all() else features.subset(np.flatnonzero(keep))


def stronger_reference(evaluation: Evaluation, estimator: str) -> tuple[str, float] | None:
    """(companion name, hmean) of the better untrained reference for ``estimator``."""
    best: tuple[str, float] | None = None
    for name in REFERENCES:
        companion = evaluation.companions.get(name)
        res = companion.by_estimator.get(estimator) if companion is not None else None
        value = res.summary.get("hmean") if res is not None else None
        if value is not None and (best is None or value > best[1]):
            best = (name, float(value))
    return best


def format_versus(evaluation: Evaluation) -> str:
    """Per scorer: detector, encoder alone, both references (hmean %), gap to the stronger.

    Empty when no reference was scored beside the detector.
    """
    if not any(name in evaluation.companions for name in REFERENCES):
        return ""
    lines = [
        f"-- detector: {evaluation.description or '?'}",
        "-- beside the untrained references (same scorer, machine types and split), hmean %",
        f"{'scorer':<9}{'detector':>9}{'encoder':>9}{'ref mean':>10}{'ref m+s':>9}{'diff':>8}",
    ]
    for name, res in evaluation.by_estimator.items():
        cells = [res.summary.get("hmean")]
        for companion in ("encoder", *REFERENCES):
            other = evaluation.companions.get(companion)
            mine = other.by_estimator.get(name) if other is not None else None
            cells.append(mine.summary.get("hmean") if mine is not None else None)
        best = stronger_reference(evaluation, name)
        if cells[0] is None or best is None:
            continue
        shown = [f"{100 * c:.2f}" if c is not None else "-" for c in cells]
        diff = f"{100 * (cells[0] - best[1]):+.2f}"
        lines.append(f"{name:<9}{shown[0]:>9}{shown[1]:>9}{shown[2]:>10}{shown[3]:>9}{diff:>8}")
    return "\n".join(lines)


def machine_comparison(evaluation: Evaluation, estimator: str) -> pd.DataFrame:
    """Per machine type, hmean % of the detector, each member alone and the references.

    What a user reads to see which pooling carries which machine (the detector uses the same
    members for every machine type: first-shot rules allow no per-machine choice).
    """
    columns: dict[str, Evaluation] = {"detector": evaluation}
    columns.update({f"member {k}": v for k, v in evaluation.members.items()})
    columns.update({k: v for k, v in evaluation.companions.items()})
    table: dict[str, pd.Series] = {}
    for label, ev in columns.items():
        res = ev.by_estimator.get(estimator)
        if res is None or res.table.empty:
            continue
        table[label] = _machine_hmean(res.table)
    return pd.DataFrame(table).round(2)


def _machine_hmean(sections: pd.DataFrame) -> pd.Series:
    """Hmean % per machine type: the harmonic mean of its sections' AUC and pAUC cells."""
    out = {}
    for machine, rows in sections.groupby("machine"):
        values = rows[["auc_source", "auc_target", "pauc"]].to_numpy(dtype=float).ravel()
        out[str(machine)] = 100 * harmonic_mean(values[np.isfinite(values)])
    return pd.Series(out)
