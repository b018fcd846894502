"""The detector families: the untrained reference, the encoder, their fusion, side by side."""

import numpy as np
import pandas as pd
import pytest
import torch

from asd.config import Config, EncoderConfig, FeatureConfig
from asd.detector import evaluate_detector, evaluate_reference, reference_embeddings
from asd.encoder import Encoder
from asd.errors import AsdError
from asd.features import FeatureSet

N_MELS = 16


def _feature_set(n_train=30, n_test=8, seed=0):
    """Two machines; anomalous test clips are louder in the upper half of the mel bands."""
    rng = np.random.default_rng(seed)
    rows, mels = [], []
    for machine in ("fan", "valve"):
        specs = [
            ("train", "normal", "source" if i < n_train - 4 else "target") for i in range(n_train)
        ]
        specs += [
            ("test", label, dom)
            for dom in ("source", "target")
            for label in ("normal", "anomaly")
            for _ in range(n_test)
        ]
        for split, label, domain in specs:
            mel = rng.normal(size=(N_MELS, 20 + rng.integers(0, 5)))
            if label == "anomaly":
                mel[N_MELS // 2 :] += 1.5
            mels.append(mel.astype(np.float32))
            rows.append((f"{machine}_{len(rows)}.wav", machine, 0, domain, split, label))
    index = pd.DataFrame(rows, columns=["clip", "machine", "section", "domain", "split", "label"])
    index["subset"] = "dev_data"
    return FeatureSet.from_arrays(mels, index, FeatureConfig(n_mels=N_MELS))


@pytest.fixture(scope="module")
def features():
    return _feature_set()


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return Encoder(EncoderConfig(), N_MELS).eval()


def test_reference_embeddings_are_clip_statistics_over_time(features):
    mean = reference_embeddings(features, "mean")
    both = reference_embeddings(features, "mean_std")
    assert mean.shape == (len(features), N_MELS) and both.shape == (len(features), 2 * N_MELS)
    clip = features.clip(3)
    np.testing.assert_allclose(mean[3], clip.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(both[3], np.r_[clip.mean(axis=1), clip.std(axis=1)], rtol=1e-6)
    with pytest.raises(AsdError, match="scoring.reference"):
        reference_embeddings(features, "median")


def test_reference_family_needs_no_encoder_and_is_its_own_reference(features):
    cfg = Config().with_overrides({"scoring.family": "reference"})
    evaluation = evaluate_detector(None, features, cfg)
    assert set(evaluation.by_estimator) == {"ml", "elliptic", "knn"}
    flat = evaluation.metrics()
    for scorer in ("ml", "elliptic", "knn"):
        assert flat[f"{scorer}.hmean"] == flat[f"reference.{scorer}.hmean"]
        assert flat[f"vs_reference.{scorer}.hmean"] == 0.0
    assert flat["ml.hmean"] > 0.9  # the louder upper bands are a spectral anomaly
    with pytest.raises(AsdError, match="needs an encoder"):
        evaluate_detector(None, features, Config())


@pytest.mark.parametrize("family", ["encoder", "fusion"])
def test_encoder_families_report_reference_encoder_and_fusion(features, encoder, family, tmp_path):
    cfg = Config().with_overrides({"scoring.family": family, "scoring.fusion_weight": 0.3})
    evaluation = evaluate_detector(
        encoder, features, cfg, estimators=("ml", "knn"), out_dir=tmp_path, device="cpu"
    )
    assert set(evaluation.companions) == {"encoder", "reference", "fusion"}
    flat = evaluation.metrics()
    mine = "fusion" if family == "fusion" else "encoder"
    for scorer in ("ml", "knn"):
        assert flat[f"{scorer}.hmean"] == flat[f"{mine}.{scorer}.hmean"]
        gap = flat[f"{scorer}.hmean"] - flat[f"reference.{scorer}.hmean"]
        assert flat[f"vs_reference.{scorer}.hmean"] == pytest.approx(gap)
    assert (tmp_path / "ml" / "anomaly_score_fan_section_00_test.csv").is_file()


def test_fusion_with_weight_zero_ranks_like_the_reference(features, encoder):
    cfg = Config().with_overrides({"scoring.family": "fusion", "scoring.fusion_weight": 0.0})
    evaluation = evaluate_detector(encoder, features, cfg, estimators=("ml",), device="cpu")
    fused = evaluation.by_estimator["ml"].results
    ref = evaluation.companions["reference"].by_estimator["ml"].results
    for machine in ("fan", "valve"):
        a = fused.loc[fused["machine"] == machine, "anomaly_score"].to_numpy()
        b = ref.loc[ref["machine"] == machine, "anomaly_score"].to_numpy()
        assert np.array_equal(np.argsort(a), np.argsort(b))
    assert evaluation.metrics()["ml.hmean"] == pytest.approx(
        evaluation.metrics()["reference.ml.hmean"]
    )


def test_reference_on_a_machine_subset_uses_the_same_clips(features):
    cfg = Config()
    evaluation = evaluate_reference(features, cfg, ("ml",), machines=("fan",))
    assert set(evaluation.by_estimator["ml"].results["machine"]) == {"fan"}
