"""Crop-level scoring: a clip is as anomalous as its most anomalous crops.

Temporal anomalies (drop-outs, transients, irregular timing) are local: one whole-clip
embedding averages them away over time. Here every clip is cut into crops of the training
length, each crop is embedded and scored like a clip (the scorer is fitted on the crops of
the normal training clips), and a clip's score is the max or the top-k mean of its crops'
scores. Thresholds and fusion statistics come from the training clips' aggregated scores,
out-of-fold *by clip* (a crop's siblings never fit the model that scores it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from asd.config import SCORERS, Config, ScoringConfig
from asd.data import normal_train_mask
from asd.embed import embed_clips
from asd.errors import AsdError
from asd.features import FeatureSet
from asd.pipeline import (
    EstimatorResult,
    Evaluation,
    estimator_result,
    labelled_test_mask,
    make_scorer,
    scored_results,
    scoring_for,
)
from asd.thresholds import fold_of

if TYPE_CHECKING:
    from asd.encoder import Encoder

Key = tuple[str, int]


def crop_starts(frames: int, crop: int, hop: int) -> list[int]:
    """Start frames of the crops of a clip: every ``hop``, the last one ending at the clip's end.

    A clip no longer than ``crop`` is one crop (the whole clip).
    """
    if frames <= crop:
        return [0]
    starts = list(range(0, frames - crop + 1, hop))
    if starts[-1] != frames - crop:
        starts.append(frames - crop)
    return starts


def crop_features(features: FeatureSet, crop: int, hop: int) -> tuple[FeatureSet, np.ndarray]:
    """(crops as a FeatureSet with their clip's index row, owner (M,) clip position per crop)."""
    mels, owner = [], []
    for i in range(len(features)):
        mel = features.clip(i)  # (n_mels, frames)
        for start in crop_starts(mel.shape[1], crop, hop):
            mels.append(mel[:, start : start + crop])
            owner.append(i)
    owners = np.asarray(owner, dtype=np.int64)
    index = features.index.drop(columns=["offset", "frames"]).iloc[owners]
    crops = FeatureSet.from_arrays(mels, index, features.config)
    # normalisation statistics stay the clips' (a crop set must not shift the encoder's input)
    return FeatureSet(crops.mel, crops.index, crops.config, features.mean, features.std), owners


def aggregate(scores: np.ndarray, owner: np.ndarray, n_clips: int, how: str, k: int) -> np.ndarray:
    """(n_clips,) per-clip score from its crops' ``scores``: 'max' or 'topk_mean' (top ``k``)."""
    out = np.full(n_clips, np.nan)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(n_clips + 1))
    for clip in range(n_clips):
        mine = scores[order[bounds[clip] : bounds[clip + 1]]]
        if not len(mine):
            raise AsdError(f"clip {clip} has no crops to score")
        if how == "max":
            out[clip] = mine.max()
        elif how == "topk_mean":
            out[clip] = np.sort(mine)[-k:].mean()
        else:
            raise AsdError(f"scoring.aggregate must be 'max' or 'topk_mean' here, got {how!r}")
    return out


def evaluate_crop_embeddings(
    embeddings: np.ndarray,
    owner: np.ndarray,
    index: pd.DataFrame,
    cfg: Config,
    estimators: Sequence[str] = SCORERS,
) -> Evaluation:
    """As :func:`asd.pipeline.evaluate_embeddings`, on crop embeddings of the clips of ``index``.

    ``owner`` maps each crop (row of ``embeddings``) to its clip's position in ``index``.
    """
    if len(embeddings) != len(owner):
        raise AsdError(f"{len(embeddings)} crop embeddings for {len(owner)} crop owners")
    index = index.reset_index(drop=True)
    fit_clips = np.flatnonzero(normal_train_mask(index))
    test_clips = np.flatnonzero((index["split"] == "test").to_numpy())
    if not len(test_clips):
        raise AsdError("no test clips to score (check --data and the machine lists)")
    labelled = labelled_test_mask(index)[test_clips]
    meta_test = index.iloc[test_clips].reset_index(drop=True)
    by_estimator: dict[str, EstimatorResult] = {}
    for estimator in estimators:
        scoring = scoring_for(cfg, estimator)
        scorer, scores = _fit_score(scoring, embeddings, owner, index, fit_clips, test_clips)
        train_scores = _train_clip_scores(scoring, embeddings, owner, index, fit_clips)
        thresholds = {
            key: float(np.quantile(s, scoring.threshold_quantile))
            for key, s in train_scores.items()
        }
        keys = zip(meta_test["machine"].astype(str), meta_test["section"].astype(int), strict=True)
        limit = np.array([thresholds[(m, s)] for m, s in keys])
        results = scored_results(meta_test, scores, scores > limit)
        results["threshold"] = limit
        res = estimator_result(estimator, results, labelled)
        res.fallbacks = {f"{m}.s{s:02d}": why for (m, s), why in scorer.fallbacks_.items()}
        res.train_scores = train_scores
        by_estimator[estimator] = res
    return Evaluation(by_estimator)


def _fit_score(
    scoring: ScoringConfig,
    embeddings: np.ndarray,
    owner: np.ndarray,
    index: pd.DataFrame,
    fit_clips: np.ndarray,
    score_clips: np.ndarray,
) -> tuple[Any, np.ndarray]:
    """(scorer fitted on the crops of ``fit_clips``, aggregated scores of ``score_clips``)."""
    scorer = make_scorer(replace(scoring, threshold_folds=0))
    fit = np.isin(owner, fit_clips)
    meta_fit = index.iloc[owner[fit]].reset_index(drop=True)
    scorer.fit(embeddings[fit], meta_fit)
    rows = np.isin(owner, score_clips)
    meta = index.iloc[owner[rows]].reset_index(drop=True)
    crop_scores = np.asarray(scorer.score_samples(embeddings[rows], meta))
    # owners renumbered to positions within score_clips, in score_clips' order
    position = {int(c): p for p, c in enumerate(score_clips)}
    local = np.array([position[int(c)] for c in owner[rows]], dtype=np.int64)
    how, k = scoring.aggregate, scoring.crop_topk
    return scorer, aggregate(crop_scores, local, len(score_clips), how, k)


def _train_clip_scores(
    scoring: ScoringConfig,
    embeddings: np.ndarray,
    owner: np.ndarray,
    index: pd.DataFrame,
    fit_clips: np.ndarray,
) -> dict[Key, np.ndarray]:
    """Per section, its normal train clips' aggregated scores, out-of-fold by clip.

    With ``scoring.threshold_folds`` = 0 they are scored in-sample.
    """
    folds = scoring.threshold_folds
    scores = np.empty(len(fit_clips))
    if folds == 0:
        scores = _fit_score(scoring, embeddings, owner, index, fit_clips, fit_clips)[1]
    else:
        domains = index.iloc[fit_clips]["domain"].astype(str).to_numpy()
        keys = index.iloc[fit_clips][["machine", "section"]].astype(str).agg("/".join, axis=1)
        fold = np.empty(len(fit_clips), dtype=int)
        for key in sorted(set(keys)):  # stratified per section and domain
            rows = np.flatnonzero(keys.to_numpy() == key)
            fold[rows] = fold_of(domains[rows], min(folds, len(rows)), 0)
        for f in range(folds):
            held = fold == f
            if held.any():
                scores[held] = _fit_score(
                    scoring, embeddings, owner, index, fit_clips[~held], fit_clips[held]
                )[1]
    meta = index.iloc[fit_clips]
    out: dict[Key, np.ndarray] = {}
    for (m, s), rows in meta.groupby(["machine", "section"]).indices.items():
        out[(str(m), int(s))] = scores[rows]
    return out


def evaluate_encoder_crops(
    encoder: Encoder,
    features: FeatureSet,
    cfg: Config,
    estimators: Sequence[str] = SCORERS,
    device: str = "auto",
    progress: bool = False,
) -> Evaluation:
    """Embed every clip as crops of ``train.crop_frames`` (hop ``scoring.crop_hop``) and score."""
    crops, owner = crop_features(features, cfg.train.crop_frames, cfg.scoring.crop_hop)
    embeddings = embed_clips(encoder, crops, device=device, progress=progress)
    return evaluate_crop_embeddings(embeddings, owner, features.index, cfg, estimators)
