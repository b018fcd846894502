"""train -> embed -> fit -> score -> metrics, glued the way the CLI and every trial glue it."""

import numpy as np
import pandas as pd
import pytest

from asd.config import Config
from asd.errors import AsdError
from asd.pipeline import evaluate_embeddings, labelled_test_mask, normal_train_mask


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
    assert set(evaluation.by_estimator) == {"ml", "elliptic"}
    for result in evaluation.by_estimator.values():
        assert result.summary["hmean"] > 0.9
        assert len(result.results) == 64
        assert set(result.results["decision"]) <= {0, 1}
    flat = evaluation.metrics(prefix="val.")
    assert "val.ml.hmean" in flat and "val.elliptic.fan.s00.auc_target" in flat


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
    with pytest.raises(AsdError, match="unknown estimator .knn."):
        evaluate_embeddings(_embeddings(index, 1.0), index, Config(), ["knn"])


def test_train_encoder_gives_the_aux_head_the_training_clips_name_labels():
    """Only normal training clips' names become classes; test clips' attributes never do."""
    from asd.config import FeatureConfig
    from asd.features import FeatureSet
    from asd.pipeline import train_encoder

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
