import numpy as np
import pandas as pd
import pytest
import torch

from asd.config import EncoderConfig, FeatureConfig
from asd.detect.frames import encoder_pooled
from asd.detect.pooling import parse_pooling
from asd.errors import AsdError
from asd.features import FeatureSet
from asd.model.embed import embed_clips
from asd.model.encoder import BACKBONE_DIM, Encoder

N_MELS = 32
FEAT = FeatureConfig(n_mels=N_MELS)


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    frames = [40, 24, 40, 31, 24, 40, 17]  # three lengths, interleaved
    mels = [(-50 + 10 * rng.standard_normal((N_MELS, f))).astype(np.float32) for f in frames]
    index = pd.DataFrame(
        {"clip": [f"c{i}.wav" for i in range(len(frames))], "split": "train", "label": "normal"}
    )
    return FeatureSet.from_arrays(mels, index, FEAT)


def make(embed_from="projection"):
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(embedding_dim=16, head_hidden_dim=32, embed_from=embed_from), 32)
    enc.set_normalization(np.full(N_MELS, -50.0), np.full(N_MELS, 10.0))
    return enc.eval()


@pytest.mark.parametrize("embed_from, dim", [("projection", 16), ("backbone", BACKBONE_DIM)])
def test_equals_clip_by_clip(features, embed_from, dim):
    enc = make(embed_from)
    out = embed_clips(enc, features, device="cpu", batch_size=2)
    assert out.shape == (len(features), dim) and out.dtype == np.float32
    with torch.no_grad():
        for i in range(len(features)):
            one = enc.embed(torch.from_numpy(features.clip(i))[None])[0].numpy()
            np.testing.assert_allclose(out[i], one, rtol=1e-4, atol=1e-5)


def test_batch_size_and_order_do_not_matter(features):
    enc = make()
    ref = embed_clips(enc, features, device="cpu", batch_size=64)
    np.testing.assert_allclose(
        embed_clips(enc, features, device="cpu", batch_size=1), ref, rtol=1e-4, atol=1e-5
    )
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    np.testing.assert_allclose(
        embed_clips(enc, features.subset(perm), device="cpu"), ref[perm], rtol=1e-4, atol=1e-5
    )


def test_restores_train_mode_and_needs_no_grad(features):
    enc = make().train()
    embed_clips(enc, features.subset([0, 1]), device="cpu")
    assert enc.training
    assert all(p.grad is None for p in enc.parameters())


def test_empty_set(features):
    enc = make()
    out = embed_clips(enc, features.subset(np.zeros(len(features), dtype=bool)), device="cpu")
    assert out.shape == (0, 16)


def test_pooled_equals_the_pooling_of_each_clips_frames(features):
    enc = make("backbone")
    pools = ["own", "mean", "max", "meanstd", "gwrp0.9"]
    out = encoder_pooled(enc, features, pools, device="cpu", batch_size=2)
    assert set(out) == set(pools)
    np.testing.assert_allclose(out["own"], embed_clips(enc, features, device="cpu"), atol=1e-5)
    with torch.no_grad():
        for i in range(len(features)):
            frames = enc.frames(torch.from_numpy(features.clip(i))[None])[0].numpy()  # (D, T')
            for spec in pools[1:]:
                expect = parse_pooling(spec)(frames)
                np.testing.assert_allclose(out[spec][i], expect, rtol=1e-4, atol=1e-5)
    # averaging the frames over time is the backbone's own pooling ('avg')
    np.testing.assert_allclose(out["mean"], out["own"], rtol=1e-4, atol=1e-5)
    assert out["meanstd"].shape == (len(features), 2 * out["mean"].shape[1])


def test_pooled_keeps_clip_order_and_refuses_per_machine_poolings(features):
    enc = make("backbone")
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    ref = encoder_pooled(enc, features, ["max"], device="cpu")["max"]
    shuffled = encoder_pooled(enc, features.subset(perm), ["max"], device="cpu", batch_size=1)
    np.testing.assert_allclose(shuffled["max"], ref[perm], rtol=1e-4, atol=1e-5)
    assert "own" not in shuffled
    with pytest.raises(AsdError, match="twfr"):
        encoder_pooled(enc, features, ["twfr"], device="cpu")
