"""train -> embed -> fit -> score -> metrics: the detector end to end, as plain functions.

The CLI and every sweep trial call these, so a trial scores exactly what `asd evaluate` scores.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from asd.config import SCORERS, Config, ScoringConfig
from asd.data.index import DEV_MACHINES, EVAL_MACHINES, normal_train_mask, read_wav
from asd.detect.gmm import GmmScorer
from asd.detect.knn import KnnScorer
from asd.detect.mahalanobis import MahalanobisScorer, write_submission
from asd.detect.metrics import METRICS, machine_table, section_scores, summarize
from asd.detect.scorer import SectionScorer
from asd.errors import AsdError
from asd.features import FeatureSet, log_mel
from asd.model.batches import TrainClips
from asd.model.embed import embed_clips
from asd.model.encoder import Encoder
from asd.model.margin import class_labels
from asd.model.train import TrainResult, train

log = logging.getLogger(__name__)

FAR_Z = 8.0
"""Median ``normal_z`` of an all-flagged batch above which `asd score` asks about the machine."""
REFERENCE_COMPANIONS = ("reference", "reference_meanstd")
"""Companions that are untrained yardsticks (see :mod:`asd.detect.detector`)."""
COMPANIONS = ("encoder", *REFERENCE_COMPANIONS)
"""Detectors scored beside a trial's own: the encoder alone and the untrained references."""
VS_REFERENCE = "vs_reference"
"""Prefix of the detector's hmean minus the stronger reference (``vs_reference.ml.hmean``)."""
COMPANION_PREFIXES = (*COMPANIONS, VS_REFERENCE)
"""Every prefix of a figure reported beside the detector's own (``reference.ml.hmean``)."""
META_COLUMNS = ["clip", "subset", "machine", "section", "domain", "split", "label"]


def metric_key(*parts: str, figure: str = "hmean") -> str:
    """A flat figure's key: the non-empty ``parts`` and ``figure``, dot-joined.

    The one spelling of every key MLflow, Tune and the summaries share: ``metric_key("ml")``
    is ``ml.hmean``, ``metric_key("reference", "ml")`` ``reference.ml.hmean``,
    ``metric_key("best", "tune")`` ``best.tune.hmean``, ``metric_key("ml", "fan.s00",
    figure="pauc")`` ``ml.fan.s00.pauc``.
    """
    return ".".join((*(p for p in parts if p), figure))


@dataclass
class EstimatorResult:
    """What one scorer scored: per-clip scores, per-section table, summary."""

    estimator: str
    results: pd.DataFrame
    """One row per test clip: META_COLUMNS + anomaly_score, decision, threshold."""
    table: pd.DataFrame
    """One row per (machine, section) with labels: auc_source, auc_target, pauc, n_clips."""
    summary: dict[str, float]
    """Official score: hmean over every machine and section, plus mean AUCs and pAUC."""
    fallbacks: dict[str, str] = field(default_factory=dict)
    train_scores: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    """Per section, the normal train clips' (out-of-fold) scores: fusion standardises by them."""


@dataclass
class Evaluation:
    """Every scorer's results on the same embeddings, and the detectors reported beside them.

    ``companions`` holds e.g. ``reference`` (the untrained reference on the same clips),
    ``encoder`` (encoder alone) and ``fusion``; their metrics carry their name as a prefix.
    """

    by_estimator: dict[str, EstimatorResult]
    companions: dict[str, Evaluation] = field(default_factory=dict)
    description: str = ""
    """What the detector is, in one line (members, pooling, scorer, how they combine)."""
    members: dict[str, Evaluation] = field(default_factory=dict)
    """Each member of an ensemble scored alone (reports only, not metrics)."""

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics ``<prefix>.<estimator>.<key>`` and per-machine ones, for MLflow and Tune.

        Companions add ``<prefix>.<name>.<estimator>.<key>`` (``reference.ml.hmean``).
        """
        flat: dict[str, float] = {}
        for name, res in self.by_estimator.items():
            for key, value in res.summary.items():
                flat[metric_key(prefix, name, figure=key)] = float(value)
            for _, row in res.table.iterrows():
                tag = f"{row['machine']}.s{int(row['section']):02d}"
                for key in METRICS:
                    if pd.notna(row[key]):
                        flat[metric_key(prefix, name, tag, figure=key)] = float(row[key])
        for name, companion in self.companions.items():
            flat.update(companion.metrics(prefix=metric_key(prefix, figure=name)))
        flat.update({metric_key(prefix, figure=k): v for k, v in self.reference_gaps().items()})
        return flat

    def reference_gaps(self) -> dict[str, float]:
        """``vs_reference.<scorer>.hmean``: this detector's hmean minus the stronger reference.

        The references are the untrained ``reference`` (clip mean) and ``reference_meanstd``.
        """
        gaps: dict[str, float] = {}
        for name, res in self.by_estimator.items():
            refs = [
                ref.by_estimator[name].summary["hmean"]
                for key in REFERENCE_COMPANIONS
                if (ref := self.companions.get(key)) is not None
                and name in ref.by_estimator
                and "hmean" in ref.by_estimator[name].summary
            ]
            if refs and "hmean" in res.summary:
                gaps[metric_key(VS_REFERENCE, name)] = res.summary["hmean"] - max(refs)
        return gaps


def labelled_test_mask(index: pd.DataFrame) -> np.ndarray:
    """Test rows whose label and domain are known (dev data, or eval with ground truth)."""
    return (
        (index["split"] == "test")
        & index["label"].isin(["normal", "anomaly"])
        & index["domain"].isin(["source", "target"])
    ).to_numpy()


def train_encoder(
    cfg: Config,
    features: FeatureSet,
    device: str = "auto",
    report: Callable[[int, dict[str, float], Encoder], None] | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    resume: bool = True,
    checkpoint_every: int = 1,
) -> TrainResult:
    """Train the contrastive encoder on the normal training clips of ``features``."""
    positions = np.flatnonzero(normal_train_mask(features.index))
    if len(positions) < 2:
        raise AsdError(
            f"only {len(positions)} normal training clips found: the encoder needs at least 2"
        )
    clips, lengths = features.padded(positions)
    labels = None
    if cfg.loss.aux_weight > 0:  # the auxiliary head learns the training clips' name labels
        labels = class_labels(features.index.iloc[positions])
    return train(
        cfg,
        TrainClips(clips, lengths, features.mean, features.std, labels),
        device=device,
        report=report,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        checkpoint_every=checkpoint_every,
    )


def evaluate_embeddings(
    embeddings: np.ndarray,
    index: pd.DataFrame,
    cfg: Config,
    estimators: Sequence[str] = SCORERS,
    machines: Sequence[str] | None = None,
    out_dir: Path | None = None,
) -> Evaluation:
    """Fit each scorer on normal training embeddings and score the labelled test clips.

    ``machines`` restricts scoring to those machine types (the tuning group of a sweep);
    with ``out_dir``, the DCASE submission CSVs go to ``out_dir/<estimator>/``.
    """
    if len(embeddings) != len(index):
        raise AsdError(f"{len(embeddings)} embeddings for {len(index)} clips")
    keep = np.ones(len(index), dtype=bool)
    if machines is not None:
        keep = index["machine"].isin(list(machines)).to_numpy()
    fit_rows = normal_train_mask(index) & keep
    test_rows = (index["split"] == "test").to_numpy() & keep
    labelled = labelled_test_mask(index)[test_rows]
    if not test_rows.any():
        raise AsdError("no test clips to score (check --data and the machine lists)")
    meta_test = index.loc[test_rows].reset_index(drop=True)
    by_estimator: dict[str, EstimatorResult] = {}
    for estimator in estimators:
        part = score_vectors(embeddings, index, fit_rows, test_rows, scoring_for(cfg, estimator))
        res = scored_result(estimator, meta_test, labelled, part)
        if out_dir is not None:
            decisions = res.results["decision"]
            write_submission(Path(out_dir) / estimator, res.results, part.scores, decisions)
        by_estimator[estimator] = res
    return Evaluation(by_estimator)


@dataclass
class MemberScores:
    """One vector per clip fitted with one scorer: test scores, per-section training figures."""

    scores: np.ndarray
    """(n_test,) anomaly scores of the test rows."""
    train_scores: dict[tuple[str, int], np.ndarray]
    """Per section, the normal train clips' out-of-fold scores (in-sample with 0 folds)."""
    thresholds: dict[tuple[str, int], float]
    """Per section, the decision threshold (a quantile of ``train_scores``)."""
    fallbacks: dict[tuple[str, int], str]
    """Per section, why a fallback model was used."""


def score_vectors(
    x: np.ndarray,
    index: pd.DataFrame,
    fit_rows: np.ndarray,
    test_rows: np.ndarray,
    scoring: ScoringConfig,
) -> MemberScores:
    """Fit the scorer ``scoring.estimator`` on ``x[fit_rows]`` and score ``x[test_rows]``."""
    if len(x) != len(index):
        raise AsdError(f"{len(x)} embeddings for {len(index)} clips")
    meta_fit = index.loc[fit_rows].reset_index(drop=True)
    meta_test = index.loc[test_rows].reset_index(drop=True)
    scorer = make_scorer(scoring).fit(x[fit_rows], meta_fit)
    scores = np.asarray(scorer.score_samples(x[test_rows], meta_test))
    return MemberScores(
        scores, dict(scorer.train_scores_), dict(scorer.thresholds_), dict(scorer.fallbacks_)
    )


def scored_result(
    estimator: str, meta_test: pd.DataFrame, labelled: np.ndarray, part: MemberScores
) -> EstimatorResult:
    """The EstimatorResult of scored test rows: decisions by their section's threshold."""
    keys = zip(meta_test["machine"].astype(str), meta_test["section"].astype(int), strict=True)
    limit = np.array([part.thresholds[k] for k in keys])
    results = scored_results(meta_test, part.scores, part.scores > limit)
    results["threshold"] = limit
    res = estimator_result(estimator, results, labelled)
    res.train_scores = part.train_scores
    res.fallbacks = {f"{m}.s{s:02d}": why for (m, s), why in part.fallbacks.items()}
    return res


def scoring_for(cfg: Config, estimator: str) -> ScoringConfig:
    """The scoring section of ``cfg`` with ``estimator`` as its scorer; AsdError if unknown."""
    if estimator not in SCORERS:
        raise AsdError(f"unknown estimator '{estimator}' (known: {', '.join(SCORERS)})")
    return cfg.with_overrides({"scoring.estimator": estimator}).scoring


def make_scorer(scoring: ScoringConfig, seed: int = 0) -> SectionScorer:
    """The scorer ``scoring.estimator`` names: Mahalanobis (ml, elliptic), kNN or a GMM."""
    if scoring.estimator == "knn":
        return KnnScorer.from_config(scoring, random_state=seed)
    if scoring.estimator == "gmm":
        return GmmScorer.from_config(scoring, random_state=seed)
    return MahalanobisScorer.from_config(scoring, random_state=seed)


def scored_results(meta: pd.DataFrame, scores: np.ndarray, decisions: np.ndarray) -> pd.DataFrame:
    """META_COLUMNS of the scored clips plus their anomaly_score and decision."""
    results = meta[[c for c in META_COLUMNS if c in meta]].copy()
    results["anomaly_score"] = scores
    results["decision"] = np.asarray(decisions, dtype=int)
    return results


def estimator_result(name: str, results: pd.DataFrame, labelled: np.ndarray) -> EstimatorResult:
    """Section table and official summary of the labelled rows of ``results``."""
    scored = results.loc[labelled]
    if len(scored):
        table = section_scores(scored)
        summary = summarize(table)
    else:
        table, summary = pd.DataFrame(), {}
    return EstimatorResult(estimator=name, results=results, table=table, summary=summary)


def save_evaluation(evaluation: Evaluation, out_dir: Path, plots: bool = True) -> list[Path]:
    """Write each estimator's per-clip scores, per-section table, summary and plots.

    Plots need matplotlib (the sweep extra); without it they are skipped with a note.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    for name, res in evaluation.by_estimator.items():
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        res.results.to_csv(folder / "scores.csv", index=False)
        res.table.to_csv(folder / "sections.csv", index=False)
        (folder / "summary.json").write_text(json.dumps(res.summary, indent=2))
        written += [folder / "scores.csv", folder / "sections.csv", folder / "summary.json"]
        labelled = res.results.loc[res.results["label"].isin(["normal", "anomaly"])]
        if not plots or labelled.empty:
            continue
        try:
            from asd.detect import plots as plotting  # optional: matplotlib (sweep extra)
        except ImportError:  # pragma: no cover - matplotlib is in the sweep extra
            log.warning("matplotlib is not installed: plots skipped")
            continue
        written.append(plotting.roc_curves(labelled, folder / "roc.png"))
        written.append(plotting.score_histograms(labelled, folder / "scores.png"))
        written.append(plotting.machine_bars(machine_table(labelled), folder / "machines.png"))
    for name, companion in evaluation.companions.items():
        written += save_evaluation(companion, out_dir / name, plots=False)
    return written


def score_new_clips(
    encoder: Encoder,
    cfg: Config,
    features: FeatureSet,
    paths: Sequence[Path],
    machine: str,
    section: int = 0,
    estimator: str = "ml",
    device: str = "auto",
) -> pd.DataFrame:
    """Anomaly scores and decisions for new wav files of one machine type and section.

    The scorer is fitted on the normal training clips of that machine and section in
    ``features`` (the same data the encoder was evaluated with), so a promoted encoder
    scores production audio exactly as it scored the test set.
    """
    if cfg.scoring.family != "encoder":
        log.warning("asd score uses the encoder alone, not its %s family", cfg.scoring.family)
    index = features.index
    fit_rows = normal_train_mask(index) & (index["machine"] == machine).to_numpy()
    fit_rows &= (index["section"] == section).to_numpy()
    if not fit_rows.any():
        raise AsdError(f"no normal training clips of {machine} section {section:02d} in the data")
    if not paths:
        raise AsdError("no wav files to score")
    train_set = features.subset(np.flatnonzero(fit_rows))
    mels = []
    for path in paths:
        wave = torch.from_numpy(read_wav(path, cfg.features.sample_rate))
        mels.append(log_mel(wave, cfg.features).numpy())
    meta = pd.DataFrame(
        {
            "clip": [Path(p).name for p in paths],
            "machine": machine,
            "section": section,
            "domain": "unknown",
            "split": "test",
            "label": "unknown",
        }
    )
    new_set = FeatureSet.from_arrays(mels, meta, cfg.features)  # the encoder normalises
    scoring = cfg.with_overrides({"scoring.estimator": estimator}).scoring
    scorer = make_scorer(scoring).fit(
        embed_clips(encoder, train_set, device=device), train_set.index
    )
    scores = scorer.score_samples(embed_clips(encoder, new_set, device=device), meta)
    meta["path"] = [str(p) for p in paths]
    meta["anomaly_score"] = scores
    meta["decision"] = scorer.decide(scores, meta)
    meta["threshold"] = scorer.thresholds_[(machine, section)]
    normal = np.asarray(scorer.train_scores_[(machine, section)])
    meta["normal_z"] = (scores - normal.mean()) / max(float(normal.std()), 1e-12)
    columns = ["path", "machine", "section", "anomaly_score", "decision", "threshold", "normal_z"]
    return meta[columns]


def other_machine_notes(table: pd.DataFrame, machine: str) -> list[str]:
    """Hints that scored clips are not ``machine``'s, for a warning after `asd score`.

    A folder named after another machine type, or every clip flagged with a median score
    more than ``FAR_Z`` standard deviations above ``machine``'s normal training clips' mean
    (``normal_z``): another machine's sound is far from all of them. Measured against the
    normal clips' own spread, not as a multiple of the threshold: Mahalanobis distances carry a
    large offset, so a ratio to the threshold moves with where the threshold sits (out-of-fold
    thresholds sit higher than in-sample ones, and 3x the threshold missed slider clips).
    """
    notes = []
    folders = [Path(p).parent.parent.name for p in table["path"]]
    others = sorted({f for f in folders if f in DEV_MACHINES + EVAL_MACHINES and f != machine})
    if others:
        n = sum(f in others for f in folders)
        notes.append(
            f"{n} of {len(table)} clips sit in folders of machine type {', '.join(others)}, "
            f"but were scored as {machine}"
        )
    z = float(table["normal_z"].median())
    if len(table) >= 4 and bool(table["decision"].all()) and z > FAR_Z:
        notes.append(
            f"all {len(table)} clips are flagged, at a median {z:.0f} standard deviations above "
            f"{machine}'s normal training clips: are they {machine} clips (--machine, --section)?"
        )
    return notes
