"""train -> embed -> fit -> score -> metrics, glued the way the CLI and every trial glue it."""

import numpy as np
import pandas as pd
import pytest

from asd.config import Config
from asd.detect.pipeline import (
    COMPANION_PREFIXES,
    evaluate_embeddings,
    labelled_test_mask,
    metric_key,
    normal_train_mask,
    other_machine_notes,
)
from asd.errors import AsdError


def _index(machines=("fan", "valve"), n_train=30, n_test=8):
    rows = []
    for machine in machines:
        for i in range(n_train):
            rows.append((machine, 0, "source" if i < n_train - 3 else "target", "train", "normal"))
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                rows += [(machine, 0, domain, "test", label)] * n_test
    frame = pd.DataFrame(rows, columns=["machine", "section", "domain", "split", "label"])
    frame["clip"] = [f"c{i}.wav" for i in range(len(frame))]
    frame["subset"] = "dev_data"
    return frame


def _embeddings(index, shift, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(index), dim))
    emb[(index["label"] == "anomaly").to_numpy()] += shift
    return emb


def test_masks():
    index = _index()
    assert normal_train_mask(index).sum() == 60
    assert labelled_test_mask(index).sum() == 64


def test_both_estimators_share_embeddings_and_separate_shifted_anomalies():
    index = _index()
    evaluation = evaluate_embeddings(_embeddings(index, shift=4.0), index, Config())
    assert set(evaluation.by_estimator) == {"ml", "elliptic", "knn", "gmm"}
    for result in evaluation.by_estimator.values():
        # Cosine kNN sees only directions, and part of a shift along (1, 1, 1, 1) is not one.
        assert result.summary["hmean"] > (0.75 if result.estimator == "knn" else 0.9)
        assert len(result.results) == 64
        assert set(result.results["decision"]) <= {0, 1}
    flat = evaluation.metrics(prefix="val")
    assert "val.ml.hmean" in flat and "val.elliptic.fan.s00.auc_target" in flat


def test_metric_key_spells_every_flat_figure():
    assert metric_key("ml") == "ml.hmean"
    assert metric_key("reference", "ml") == "reference.ml.hmean"
    assert metric_key("", "ml") == "ml.hmean"  # the detector's own: no prefix
    assert metric_key("best", "tune") == "best.tune.hmean"
    assert metric_key("reference") == "reference.hmean"
    assert metric_key("ml", "fan.s00", figure="pauc") == "ml.fan.s00.pauc"
    assert set(COMPANION_PREFIXES) == {"encoder", "reference", "reference_meanstd", "vs_reference"}


def test_no_shift_is_near_chance():
    index = _index(n_test=40)
    evaluation = evaluate_embeddings(_embeddings(index, shift=0.0), index, Config(), ["ml"])
    assert 0.3 < evaluation.by_estimator["ml"].summary["hmean"] < 0.7


def test_machine_filter_scores_only_those_machines():
    index = _index(machines=("fan", "valve", "slider"))
    evaluation = evaluate_embeddings(
        _embeddings(index, 3.0), index, Config(), ["ml"], machines=["fan"]
    )
    assert set(evaluation.by_estimator["ml"].results["machine"]) == {"fan"}


def test_mismatched_lengths_and_unknown_estimator():
    index = _index()
    with pytest.raises(AsdError, match="embeddings for"):
        evaluate_embeddings(np.zeros((3, 4)), index, Config())
    with pytest.raises(AsdError, match="unknown estimator .mcd."):
        evaluate_embeddings(_embeddings(index, 1.0), index, Config(), ["mcd"])


def test_train_encoder_gives_the_aux_head_the_training_clips_name_labels():
    """Only normal training clips' names become classes; test clips' attributes never do."""
    from asd.config import FeatureConfig
    from asd.detect.pipeline import train_encoder
    from asd.features import FeatureSet

    index = _index(n_train=4, n_test=1)
    index["attributes"] = [
        {"speed": "slow" if i % 2 else "fast"} if split == "train" else {"speed": "secret"}
        for i, split in enumerate(index["split"])
    ]
    rng = np.random.default_rng(0)
    fcfg = FeatureConfig(n_mels=16)
    mels = [rng.normal(-50, 5, size=(16, 24)).astype(np.float32) for _ in range(len(index))]
    features = FeatureSet.from_arrays(mels, index, fcfg)
    overrides = {
        "features.n_mels": 16,
        "encoder.width": 4,
        "encoder.embedding_dim": 8,
        "encoder.head_hidden_dim": 8,
        "augment.n_views": 1,
        "train.epochs": 1,
        "train.batch_size": 4,
        "train.lr": 0.001,
        "train.crop_frames": 16,
        "loss.aux_weight": 0.5,
    }
    result = train_encoder(Config().with_overrides(overrides), features, "cpu", progress=False)
    assert result.encoder.classes == (
        "fan/section_00/speed=fast",
        "fan/section_00/speed=slow",
        "valve/section_00/speed=fast",
        "valve/section_00/speed=slow",
    )
    assert np.isfinite(result.history[0]["aux_loss"])


def _scored(scores, threshold, normal_z, folder="incoming"):
    n = len(scores)
    return pd.DataFrame(
        {
            "path": [f"/x/{folder}/test/c{i}.wav" for i in range(n)],
            "anomaly_score": scores,
            "decision": [int(s > threshold) for s in scores],
            "threshold": threshold,
            "normal_z": normal_z,
        }
    )


def test_other_machine_notes_measure_against_the_normal_spread_not_the_threshold():
    # Out-of-fold thresholds sit high: far clips are < 3x the threshold yet many sd away.
    far = _scored([115.0, 116.0, 137.0, 213.0], 51.0, [10.4, 10.5, 13.4, 24.5])
    assert any("are they fan clips" in n for n in other_machine_notes(far, "fan"))
    # The machine's own anomalies: flagged, but within FAR_Z (8) sd of its normal clips.
    own = _scored([106.0, 107.0, 58.0, 87.0], 51.0, [9.0, 9.2, 2.0, 6.2])
    assert other_machine_notes(own, "fan") == []
    normal = _scored([47.0, 45.0, 43.0, 52.0], 51.0, [0.5, 0.2, -0.2, 1.2])
    assert other_machine_notes(normal, "fan") == []
    # slider clips scored as fan by a one-epoch smoke encoder sat at a median 9.87 sd
    slider = _scored([90.0, 92.0, 95.0, 99.0], 51.0, [9.5, 9.8, 9.94, 10.2])
    assert any("are they fan clips" in n for n in other_machine_notes(slider, "fan"))
    named = other_machine_notes(_scored([47.0] * 4, 51.0, [0.5] * 4, "slider"), "fan")
    assert named == ["4 of 4 clips sit in folders of machine type slider, but were scored as fan"]
