"""The detector artifact: fitted once, saved without pickle, loaded, scoring as evaluate does."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from asd.config import Config
from asd.data.layouts import index_data
from asd.detect.artifact import add_machine, fit_detector, load_detector, save_detector
from asd.detect.detector import evaluate_detector
from asd.errors import AsdError
from asd.features import extract_features
from asd.model.encoder import Encoder

SMALL = {"features.n_mels": 16, "scoring.threshold_folds": 2}


@pytest.fixture(scope="module")
def features(synth_tree, tmp_path_factory):
    root = synth_tree(machines=("fan", "slider", "valve"))
    index = index_data(root)
    cfg = Config().with_overrides(SMALL)
    return extract_features(index, cfg.features, tmp_path_factory.mktemp("cache"), progress=False)


def tiny_encoder() -> Encoder:
    """A seeded, untrained encoder of width 4: what a member's frames need, in milliseconds."""
    cfg = Config().with_overrides(
        {**SMALL, "encoder.width": 4, "encoder.embedding_dim": 8, "encoder.head_hidden_dim": 8}
    )
    torch.manual_seed(0)
    encoder = Encoder(cfg.encoder, 16)
    encoder.set_normalization(np.full(16, -40.0), np.full(16, 20.0))
    return encoder.eval()


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return tiny_encoder()


def _subset(features, machines):
    return features.subset(features.index["machine"].isin(machines).to_numpy())


def _test_rows(features):
    return features.subset((features.index["split"] == "test").to_numpy())


CASES = [
    ({"scoring.family": "reference", "scoring.reference": "meanstd"}, "ml"),
    ({"scoring.family": "reference", "scoring.reference": "max"}, "knn"),
    ({"scoring.family": "reference", "scoring.reference": "gwrp0.9"}, "gmm"),
    ({"scoring.family": "reference", "scoring.reference": "mean"}, "elliptic"),
    ({"scoring.family": "encoder", "scoring.pool": "own"}, "ml"),
    ({"scoring.family": "fusion", "scoring.fusion_weight": 0.3}, "ml"),
    ({"scoring.family": "ensemble", "scoring.members": ["logmel/max/knn", "encoder/mean"],
      "scoring.combine": "max"}, "gmm"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "estimator"), CASES)
def test_saved_detector_scores_as_evaluate(features, encoder, tmp_path, overrides, estimator):
    cfg = Config().with_overrides({**SMALL, **overrides, "scoring.estimator": estimator})
    expected = evaluate_detector(
        encoder, features, cfg, [estimator], companions=False, device="cpu"
    )
    want = expected.by_estimator[estimator].results
    detector = fit_detector(encoder, features, cfg, "fp", device="cpu")
    loaded = load_detector(save_detector(detector, tmp_path / "det"))
    got = loaded.score_features(_test_rows(features))
    assert list(got["clip"]) == list(want["clip"])
    np.testing.assert_allclose(got["anomaly_score"], want["anomaly_score"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["threshold"], want["threshold"], rtol=1e-9)
    assert (got["decision"].to_numpy() == want["decision"].to_numpy()).all()
    assert np.isfinite(got["normal_z"]).all()
    assert loaded.data_fingerprint == "fp"


def test_no_pickle_anywhere(features, encoder, tmp_path):
    cfg = Config().with_overrides({**SMALL, "scoring.family": "fusion"})
    folder = save_detector(fit_detector(encoder, features, cfg, device="cpu"), tmp_path / "d")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["detector.json", "encoder.pt", "manifest.json", "member0.json",
                     "member0.npz", "member1.json", "member1.npz"]  # fmt: skip
    for npz in folder.glob("*.npz"):
        with np.load(npz, allow_pickle=False) as arrays:  # raises on any object array
            assert all(arrays[k].dtype != object for k in arrays.files)
        with zipfile.ZipFile(npz) as zf:
            assert all(n.endswith(".npy") for n in zf.namelist())
    info = json.loads((folder / "detector.json").read_text())
    assert info["config"]["scoring.family"] == "fusion"
    assert info["features"]["features.n_mels"] == 16


def test_tampered_or_truncated_artifact_is_refused(features, tmp_path):
    cfg = Config().with_overrides({**SMALL, "scoring.family": "reference"})
    folder = save_detector(fit_detector(None, features, cfg), tmp_path / "d")
    npz = folder / "member0.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(AsdError, match="member0.npz does not match its manifest"):
        load_detector(folder)
    npz.unlink()
    with pytest.raises(AsdError, match="member0.npz is missing"):
        load_detector(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(AsdError, match="no manifest.json"):
        load_detector(folder)


def test_unknown_section_is_named(features):
    cfg = Config().with_overrides({**SMALL, "scoring.family": "reference"})
    detector = fit_detector(None, _subset(features, ["fan"]), cfg)
    with pytest.raises(AsdError, match="machine slider section 00 is not in this detector"):
        detector.score_features(_test_rows(_subset(features, ["slider"])))


def test_waveforms_and_mels_score_alike(features):
    cfg = Config().with_overrides({**SMALL, "scoring.family": "reference"})
    detector = fit_detector(None, features, cfg)
    test = _test_rows(_subset(features, ["fan"]))
    mels = [test.clip(i) for i in range(len(test))]
    meta = pd.DataFrame({"machine": "fan", "section": [0] * len(mels)})
    by_mel = detector.score(mels, meta)
    np.testing.assert_allclose(
        by_mel["anomaly_score"], detector.score_features(test)["anomaly_score"]
    )


@pytest.mark.parametrize("family", ["reference", "fusion"])
def test_add_machine_keeps_old_sections_and_scores_the_new(features, encoder, tmp_path, family):
    cfg = Config().with_overrides({**SMALL, "scoring.family": family})
    old_data, new_data = _subset(features, ["fan", "slider"]), _subset(features, ["valve"])
    old = load_detector(save_detector(fit_detector(encoder, old_data, cfg), tmp_path / "old"))
    grown = load_detector(save_detector(add_machine(old, new_data, "newfp"), tmp_path / "new"))
    assert grown.sections() == [("fan", 0), ("slider", 0), ("valve", 0)]
    before = old.score_features(_test_rows(old_data))
    after = grown.score_features(_test_rows(old_data))
    pd.testing.assert_frame_equal(before, after)
    alone = fit_detector(encoder, new_data, cfg).score_features(_test_rows(new_data))
    added = grown.score_features(_test_rows(new_data))
    np.testing.assert_allclose(added["anomaly_score"], alone["anomaly_score"], rtol=1e-9)
    assert "valve/00" in grown.history[-1]
    with pytest.raises(AsdError, match="already has machine/section valve/00"):
        add_machine(grown, new_data, "again")
