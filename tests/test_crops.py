"""Crop-level scoring: crops of the training length, scored alone, a clip's max or top-k mean."""

import numpy as np
import pandas as pd
import pytest
import torch

from asd.config import Config, EncoderConfig, FeatureConfig
from asd.crops import aggregate, crop_features, crop_starts, evaluate_crop_embeddings
from asd.detector import evaluate_detector
from asd.encoder import Encoder
from asd.errors import AsdError
from asd.features import FeatureSet

N_MELS = 8


def test_crop_starts_cover_the_clip_and_end_at_its_end():
    assert crop_starts(10, 4, 3) == [0, 3, 6]
    assert crop_starts(11, 4, 3) == [0, 3, 6, 7]
    assert crop_starts(4, 4, 2) == [0] and crop_starts(3, 8, 2) == [0]


def test_crop_features_keep_each_crops_clip_row_and_frames():
    mels = [np.arange(N_MELS * f, dtype=np.float32).reshape(N_MELS, f) for f in (10, 5)]
    index = pd.DataFrame({"clip": ["a.wav", "b.wav"], "machine": "fan", "section": 0})
    features = FeatureSet.from_arrays(mels, index, FeatureConfig(n_mels=N_MELS))
    crops, owner = crop_features(features, 6, 2)
    assert owner.tolist() == [0, 0, 0, 1]  # starts 0, 2, 4 of a; b is shorter than a crop
    assert crops.index["clip"].tolist() == ["a.wav"] * 3 + ["b.wav"]
    np.testing.assert_array_equal(crops.clip(1), mels[0][:, 2:8])
    np.testing.assert_array_equal(crops.clip(3), mels[1])
    np.testing.assert_array_equal(crops.mean, features.mean)  # the clips' statistics


def test_aggregate_against_a_brute_force_oracle():
    rng = np.random.default_rng(0)
    owner = rng.integers(0, 5, size=40)
    owner[:5] = np.arange(5)  # every clip has a crop
    scores = rng.normal(size=40)
    for how, k in (("max", 1), ("topk_mean", 3), ("topk_mean", 100)):
        got = aggregate(scores, owner, 5, how, k)
        for clip in range(5):
            mine = np.sort(scores[owner == clip])[::-1]
            expected = mine[0] if how == "max" else mine[:k].mean()
            assert got[clip] == pytest.approx(expected)
    with pytest.raises(AsdError, match="no crops"):
        aggregate(scores, owner, 6, "max", 1)


def _local_anomaly_set(seed=0, n_train=30, n_test=8, frames=64, crop=8):
    """Anomalous clips differ from normal ones in one short crop only.

    Every clip has its own level per band (spread 0.5), so the small shift of a clip's mean
    hides among normal clips while the crop's jump does not.
    """
    rng = np.random.default_rng(seed)
    rows, mels = [], []
    specs = [("train", "normal", "source" if i < n_train - 6 else "target") for i in range(n_train)]
    specs += [
        ("test", label, dom)
        for dom in ("source", "target")
        for label in ("normal", "anomaly")
        for _ in range(n_test)
    ]
    for split, label, domain in specs:
        mel = rng.normal(size=(N_MELS, frames)) + rng.normal(0, 0.5, size=(N_MELS, 1))
        mel = mel.astype(np.float32)
        if label == "anomaly":
            start = crop * rng.integers(0, frames // crop)
            mel[:, start : start + crop] += 2.5
        mels.append(mel)
        rows.append((f"fan_{len(rows)}.wav", "fan", 0, domain, split, label))
    index = pd.DataFrame(rows, columns=["clip", "machine", "section", "domain", "split", "label"])
    return FeatureSet.from_arrays(mels, index, FeatureConfig(n_mels=N_MELS))


def _crop_means(features, crop):
    crops, owner = crop_features(features, crop, crop)
    return np.stack([crops.clip(i).mean(axis=1) for i in range(len(crops))]), owner


def test_max_over_crops_finds_a_local_anomaly_that_the_clip_mean_hides():
    features = _local_anomaly_set()
    cfg = Config().with_overrides({"scoring.aggregate": "max", "scoring.threshold_folds": 3})
    emb, owner = _crop_means(features, 8)
    crops = evaluate_crop_embeddings(emb, owner, features.index, cfg, ("ml",))
    clip = evaluate_crop_embeddings(
        np.stack([features.clip(i).mean(axis=1) for i in range(len(features))]),
        np.arange(len(features)),
        features.index,
        cfg,
        ("ml",),
    )
    assert crops.by_estimator["ml"].summary["auc_source"] > 0.95
    assert clip.by_estimator["ml"].summary["auc_source"] < 0.9
    res = crops.by_estimator["ml"]
    assert set(res.train_scores) == {("fan", 0)} and len(res.train_scores[("fan", 0)]) == 30
    flagged = res.results.loc[res.results["label"] == "normal", "decision"].mean()
    assert flagged < 0.5  # thresholds from out-of-fold clip scores, not in-sample crops


def test_out_of_fold_train_scores_exceed_in_sample_ones():
    features = _local_anomaly_set(seed=1)
    emb, owner = _crop_means(features, 8)
    base = Config().with_overrides({"scoring.aggregate": "topk_mean"})
    oof = evaluate_crop_embeddings(emb, owner, features.index, base, ("ml",))
    ins = evaluate_crop_embeddings(
        emb, owner, features.index, base.with_overrides({"scoring.threshold_folds": 0}), ("ml",)
    )
    key = ("fan", 0)
    a, b = oof.by_estimator["ml"].train_scores[key], ins.by_estimator["ml"].train_scores[key]
    assert a.mean() > b.mean()


def test_the_detector_scores_crops_when_asked_and_keeps_its_companions():
    features = _local_anomaly_set(frames=40)
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(width=4, embedding_dim=8, head_hidden_dim=8), N_MELS).eval()
    cfg = Config().with_overrides(
        {"scoring.aggregate": "max", "train.crop_frames": 16, "scoring.crop_hop": 8}
    )
    evaluation = evaluate_detector(encoder, features, cfg, estimators=("ml",), device="cpu")
    assert set(evaluation.companions) == {"encoder", "reference", "fusion"}
    results = evaluation.by_estimator["ml"].results
    assert len(results) == (features.index["split"] == "test").sum()
    clip_cfg = cfg.with_overrides({"scoring.aggregate": "clip"})
    plain = evaluate_detector(encoder, features, clip_cfg, estimators=("ml",), device="cpu")
    assert not np.allclose(
        results["anomaly_score"], plain.by_estimator["ml"].results["anomaly_score"]
    )
    ref = evaluation.companions["reference"].by_estimator["ml"].results["anomaly_score"]
    plain_ref = plain.companions["reference"].by_estimator["ml"].results["anomaly_score"]
    np.testing.assert_allclose(ref, plain_ref)  # the reference stays the clip statistic


def test_bad_aggregate_settings_are_refused():
    for key, value in (
        ("scoring.aggregate", "mean"),
        ("scoring.crop_hop", 0),
        ("scoring.crop_topk", 0),
    ):
        with pytest.raises(AsdError, match=key):
            Config().with_overrides({key: value}).validate()
