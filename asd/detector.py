"""The detector a trial is: the learned encoder, the untrained reference, or their fusion.

The untrained reference (each clip's mean, or mean and standard deviation, of its log-mel
over time, scored by the same estimator on the same machines and split) is hard to beat on
small or stationary data, so every evaluation of an encoder scores it too and reports the
difference: a user must see whether the learned part earns its cost. ``scoring.family``
picks which of the three is *the* detector (its figures are the plain ``ml.hmean`` ...
metrics); the others ride along as companions (``encoder.ml.hmean``, ``reference.ml.hmean``,
``fusion.ml.hmean``), and ``vs_reference.<scorer>.hmean`` is the detector minus the reference
(:meth:`asd.pipeline.Evaluation.reference_gaps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asd.config import SCORERS, Config
from asd.crops import evaluate_encoder_crops
from asd.embed import embed_clips
from asd.errors import AsdError
from asd.fusion import fit_fusion
from asd.pipeline import (
    EstimatorResult,
    Evaluation,
    estimator_result,
    evaluate_embeddings,
    labelled_test_mask,
    scored_results,
)
from asd.scoring import write_submission

if TYPE_CHECKING:
    from asd.encoder import Encoder
    from asd.features import FeatureSet


def reference_embeddings(features: FeatureSet, statistic: str = "mean") -> np.ndarray:
    """(N, n_mels) clip-mean log-mel, or (N, 2 * n_mels) mean then std over time: no training."""
    if statistic not in ("mean", "mean_std"):
        raise AsdError(f"scoring.reference must be 'mean' or 'mean_std', got {statistic!r}")
    rows = []
    for i in range(len(features)):
        mel = features.clip(i)  # (n_mels, frames)
        parts = [mel.mean(axis=1)] + ([mel.std(axis=1)] if statistic == "mean_std" else [])
        rows.append(np.concatenate(parts))
    return np.stack(rows)  # (N, n_mels) or (N, 2 * n_mels)


def evaluate_reference(
    features: FeatureSet,
    cfg: Config,
    estimators: Sequence[str] = SCORERS,
    machines: Sequence[str] | None = None,
) -> Evaluation:
    """The untrained reference (``cfg.scoring.reference``) scored like any embedding."""
    subset = _machines(features, machines)
    embeddings = reference_embeddings(subset, cfg.scoring.reference)
    return evaluate_embeddings(embeddings, subset.index, cfg, estimators)


def evaluate_detector(
    encoder: Encoder | None,
    features: FeatureSet,
    cfg: Config,
    estimators: Sequence[str] = SCORERS,
    machines: Sequence[str] | None = None,
    out_dir: Path | None = None,
    device: str = "auto",
    reference: Evaluation | None = None,
    companions: bool = True,
    progress: bool = False,
) -> Evaluation:
    """Score the detector ``cfg.scoring.family`` names, with the others as companions.

    ``reference`` reuses an earlier reference evaluation of the same clips (it never changes
    during training). ``companions=False`` skips what the family itself does not need (the
    per-epoch validation of an encoder trial). With ``out_dir``, the detector's submission
    CSVs go to ``out_dir/<estimator>/``.
    """
    family = cfg.scoring.family
    subset = _machines(features, machines)
    if reference is None and (companions or family != "encoder"):
        reference = evaluate_reference(subset, cfg, estimators)
    if family == "reference" and reference is not None:
        result = Evaluation(reference.by_estimator, {"reference": reference})
    elif encoder is None:
        raise AsdError(f"scoring.family '{family}' needs an encoder")
    else:
        alone = _encoder_alone(encoder, subset, cfg, estimators, device, progress)
        result = _with_companions(alone, reference, cfg)
    if out_dir is not None:
        for name, res in result.by_estimator.items():
            write_submission(Path(out_dir) / name, res.results, *_scores(res))
    return result


def _encoder_alone(
    encoder: Encoder,
    features: FeatureSet,
    cfg: Config,
    estimators: Sequence[str],
    device: str,
    progress: bool,
) -> Evaluation:
    """The encoder's own scores: one embedding per clip, or crops (``scoring.aggregate``)."""
    if cfg.scoring.aggregate != "clip":
        return evaluate_encoder_crops(encoder, features, cfg, estimators, device, progress)
    embeddings = embed_clips(encoder, features, device=device, progress=progress)
    return evaluate_embeddings(embeddings, features.index, cfg, estimators)


def _with_companions(alone: Evaluation, reference: Evaluation | None, cfg: Config) -> Evaluation:
    """The family's evaluation with the encoder alone, the reference and fusion beside it."""
    if reference is None:
        return Evaluation(alone.by_estimator)
    fused = fuse_evaluations(alone, reference, cfg)
    chosen = fused if cfg.scoring.family == "fusion" else alone
    return Evaluation(
        chosen.by_estimator, {"encoder": alone, "reference": reference, "fusion": fused}
    )


def fuse_evaluations(encoder: Evaluation, reference: Evaluation, cfg: Config) -> Evaluation:
    """Per scorer both evaluations share: standardised scores, weighted (``scoring.fusion_*``)."""
    by_estimator: dict[str, EstimatorResult] = {}
    for name, enc in encoder.by_estimator.items():
        ref = reference.by_estimator.get(name)
        if ref is None:
            continue
        if not np.array_equal(enc.results["clip"].to_numpy(), ref.results["clip"].to_numpy()):
            raise AsdError("fusion: the encoder and the reference scored different clips")
        fusion = fit_fusion(
            enc.train_scores,
            ref.train_scores,
            cfg.scoring.fusion_weight,
            cfg.scoring.threshold_quantile,
        )
        meta = enc.results
        scores = fusion.score(
            meta["anomaly_score"].to_numpy(), ref.results["anomaly_score"].to_numpy(), meta
        )
        keys = zip(meta["machine"].astype(str), meta["section"].astype(int), strict=True)
        thresholds = np.array([fusion.thresholds[k] for k in keys])
        results = scored_results(meta, scores, scores > thresholds)
        results["threshold"] = thresholds
        by_estimator[name] = estimator_result(name, results, labelled_test_mask(results))
    return Evaluation(by_estimator)


def _scores(res: EstimatorResult) -> tuple[np.ndarray, np.ndarray]:
    return res.results["anomaly_score"].to_numpy(), res.results["decision"].to_numpy()


def _machines(features: FeatureSet, machines: Sequence[str] | None) -> FeatureSet:
    """The clips of ``machines`` (all when None)."""
    if machines is None:
        return features
    keep = features.index["machine"].isin(list(machines)).to_numpy()
    return features if keep.all() else features.subset(np.flatnonzero(keep))


def format_versus(evaluation: Evaluation) -> str:
    """Per scorer: the detector, encoder alone, fusion and reference hmean, and the difference.

    Empty when the evaluation has no reference beside it.
    """
    reference = evaluation.companions.get("reference")
    if reference is None:
        return ""
    lines = ["-- beside the untrained reference (same scorer, machine types and split), hmean %"]
    lines.append(
        f"{'scorer':<9}{'detector':>9}{'encoder':>9}{'fusion':>9}{'reference':>10}{'diff':>8}"
    )
    for name, res in evaluation.by_estimator.items():
        cells = [res.summary.get("hmean")]
        for companion in ("encoder", "fusion", "reference"):
            other = evaluation.companions.get(companion)
            mine = other.by_estimator.get(name) if other is not None else None
            cells.append(mine.summary.get("hmean") if mine is not None else None)
        if cells[0] is None or cells[3] is None:
            continue
        shown = [f"{100 * c:.2f}" if c is not None else "-" for c in cells]
        diff = f"{100 * (cells[0] - cells[3]):+.2f}"
        lines.append(f"{name:<9}{shown[0]:>9}{shown[1]:>9}{shown[2]:>9}{shown[3]:>10}{diff:>8}")
    return "\n".join(lines)
