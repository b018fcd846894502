"""Frames -> pooled vectors (asd/detect/frames.py): each clip pooled alone, whatever the batch."""

import numpy as np
import pandas as pd
import pytest
import torch

from asd.config import EncoderConfig, FeatureConfig
from asd.detect.frames import encoder_pooled, logmel_pooled, pooled_vectors
from asd.detect.pooling import TWFR_DECAYS, gwrp_weights, parse_pooling
from asd.errors import AsdError
from asd.features import FeatureSet
from asd.model.encoder import Encoder

N_MELS = 8


@pytest.fixture(scope="module")
def features():
    """Two machine types, clips of three lengths interleaved (a padded batch would differ)."""
    rng = np.random.default_rng(1)
    lengths = [30, 12, 30, 21, 12, 30, 21, 12]
    machines = ["fan", "valve"] * 4
    mels = [(-40 + 8 * rng.standard_normal((N_MELS, f))).astype(np.float32) for f in lengths]
    index = pd.DataFrame(
        {
            "clip": [f"c{i}.wav" for i in range(len(lengths))],
            "machine": machines,
            "section": 0,
            "domain": "source",
            "split": "train",
            "label": "normal",
        }
    )
    return FeatureSet.from_arrays(mels, index, FeatureConfig(n_mels=N_MELS))


def test_each_clip_is_pooled_over_its_own_frames_only(features):
    out = logmel_pooled(features, ["mean", "max", "meanstd", "p90", "mean"], batch_size=2)
    assert set(out) == {"mean", "max", "meanstd", "p90"}
    for i in range(len(features)):
        mel = features.clip(i)  # (n_mels, frames), no padding
        np.testing.assert_allclose(out["mean"][i], mel.mean(axis=1), rtol=1e-5)
        np.testing.assert_allclose(out["max"][i], mel.max(axis=1), rtol=1e-6)
        np.testing.assert_allclose(
            out["meanstd"][i], np.concatenate([mel.mean(axis=1), mel.std(axis=1)]), rtol=1e-4
        )
        np.testing.assert_allclose(out["p90"][i], np.percentile(mel, 90, axis=1), rtol=1e-5)
    assert all(v.dtype == np.float32 and len(v) == len(features) for v in out.values())


def test_twfr_pools_each_machine_with_its_own_decay(features):
    out = logmel_pooled(features, ["twfr"])["twfr"]
    for i in range(len(features)):
        mel = features.clip(i)
        decay = TWFR_DECAYS[str(features.index["machine"].iat[i])]
        ranked = -np.sort(-mel, axis=1)  # high to low per band
        expect = ranked @ gwrp_weights(mel.shape[1], decay)
        np.testing.assert_allclose(out[i], expect, rtol=1e-4, atol=1e-4)
    # fan's decay is 1 (the mean), valve's 0.46 leans to the loudest frames
    fan, valve = 0, 1
    np.testing.assert_allclose(out[fan], features.clip(fan).mean(axis=1), rtol=1e-4)
    assert (out[valve] > features.clip(valve).mean(axis=1)).all()


def test_pooled_vectors_serves_both_kinds_of_frames_in_one_call(features):
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(width=8, embed_from="backbone"), N_MELS).eval()
    encoder.set_normalization(np.full(N_MELS, -40.0), np.full(N_MELS, 8.0))
    needed = [("logmel", "max"), ("encoder", "mean"), ("logmel", "max"), ("encoder", "own")]
    out = pooled_vectors(needed, features, encoder, device="cpu")
    assert set(out) == {("logmel", "max"), ("encoder", "mean"), ("encoder", "own")}
    np.testing.assert_array_equal(out[("logmel", "max")], logmel_pooled(features, ["max"])["max"])
    direct = encoder_pooled(encoder, features, ["mean", "own"], device="cpu")
    np.testing.assert_allclose(out[("encoder", "mean")], direct["mean"], rtol=1e-5)
    np.testing.assert_allclose(out[("encoder", "own")], direct["own"], rtol=1e-5)
    assert out[("encoder", "mean")].shape[1] != N_MELS  # the encoder's width, not the mels'
    assert parse_pooling("max").width(N_MELS) == out[("logmel", "max")].shape[1]


def test_an_encoder_member_without_an_encoder_is_refused(features):
    assert set(pooled_vectors([("logmel", "mean")], features, None)) == {("logmel", "mean")}
    with pytest.raises(AsdError, match="no encoder was given"):
        pooled_vectors([("encoder", "mean")], features, None)
