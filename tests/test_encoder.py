import dataclasses

import pytest
import torch

from asd.config import Config, EncoderConfig
from asd.errors import AsdError
from asd.model.encoder import BACKBONE_DIM, Encoder, load_encoder, save_encoder

N_MELS = 32
CFG = EncoderConfig(embedding_dim=16, head_hidden_dim=32)


def make(embed_from="projection", seed=0):
    torch.manual_seed(seed)
    return Encoder(dataclasses.replace(CFG, embed_from=embed_from), N_MELS).eval()


@pytest.mark.parametrize("frames", [16, 40, 63, 101])
def test_forward_shape_any_length(frames):
    enc = make()
    x = torch.randn(3, N_MELS, frames) * 10 - 50
    with torch.no_grad():
        assert enc(x).shape == (3, 16)
        assert enc.embed(x).shape == (3, 16)


def test_embed_from_backbone_and_projection():
    x = torch.randn(2, N_MELS, 40)
    proj, back = make("projection"), make("backbone")
    with torch.no_grad():
        assert back.embed(x).shape == (2, BACKBONE_DIM)
        assert back.embedding_dim == BACKBONE_DIM and proj.embedding_dim == 16
        torch.testing.assert_close(proj.embed(x), proj(x))
        torch.testing.assert_close(back.embed(x), back.backbone(x))
        # same seed -> same weights: the projection is the head applied to the backbone
        torch.testing.assert_close(proj.embed(x), back.head(back.backbone(x)))


def test_normalisation_buffers_are_used():
    enc = make()
    mean, std = torch.linspace(-80, -20, N_MELS), torch.linspace(1, 10, N_MELS)
    enc.set_normalization(mean, std)
    assert {"mel_mean", "mel_std"} <= set(enc.state_dict())
    x = torch.randn(2, N_MELS, 40)
    raw = x * std[:, None] + mean[:, None]  # what the buffers undo
    ref = make()  # identity normalisation, same weights
    with torch.no_grad():
        torch.testing.assert_close(enc(raw), ref(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(AsdError, match="n_mels"):
        enc.set_normalization(torch.zeros(3), torch.ones(3))


def test_channels_last_matches():
    enc = make()
    x = torch.randn(2, N_MELS, 40)
    with torch.no_grad():
        ref = enc(x)
        enc.to(memory_format=torch.channels_last)
        torch.testing.assert_close(enc(x), ref, rtol=1e-4, atol=1e-4)


def test_gradients_reach_the_stem():
    enc = make().train()
    enc(torch.randn(4, N_MELS, 40)).sum().backward()
    assert enc.stem[0].weight.grad is not None
    assert enc.stem[0].weight.grad.abs().sum() > 0


def test_save_load_round_trip(tmp_path):
    enc = make("backbone")
    enc.set_normalization(torch.full((N_MELS,), -40.0), torch.full((N_MELS,), 7.0))
    config = Config().with_overrides(
        {"features.n_mels": N_MELS, "encoder.embedding_dim": 16, "encoder.embed_from": "backbone"}
    )
    path = save_encoder(enc, tmp_path / "m" / "encoder.pt", config, {"code": "abc", "n": 3})
    raw = torch.load(path, weights_only=True)  # no pickle of arbitrary objects
    assert raw["extra"] == {"code": "abc", "n": 3}
    loaded, cfg, extra = load_encoder(path)
    assert cfg == config and extra == {"code": "abc", "n": 3}
    assert loaded.cfg == enc.cfg and not loaded.training
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    x = torch.randn(2, N_MELS, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), enc.embed(x), rtol=0, atol=0)


def test_missing_or_corrupt_file_raises(tmp_path):
    with pytest.raises(AsdError, match="nothing.pt"):
        load_encoder(tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(AsdError, match="bad.pt"):
        load_encoder(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(AsdError, match="other.pt"):
        load_encoder(other)
    # a truncated real file
    good = save_encoder(make(), tmp_path / "good.pt", Config(), None)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(AsdError, match="cut.pt"):
        load_encoder(cut)


@pytest.mark.parametrize(
    "width, pool, dim",
    [(64, "avg", 512), (16, "avg", 128), (8, "freq", 64 * 4), (8, "meanstd", 128)],
)
def test_width_and_pool_set_the_backbone_size(width, pool, dim):
    enc = Encoder(dataclasses.replace(CFG, width=width, pool=pool, embed_from="backbone"), N_MELS)
    x = torch.randn(2, N_MELS, 40) * 10 - 50
    with torch.no_grad():
        assert enc.backbone(x).shape == (2, dim) and enc.embedding_dim == dim
        assert enc(x).shape == (2, 16)  # the projection head follows the backbone's size
    assert enc.stem[0].out_channels == width


def test_freq_pool_keeps_where_in_the_spectrum_and_meanstd_keeps_time_variation():
    from asd.model.encoder import pool_features

    fmap = torch.zeros(1, 2, 8, 6)
    fmap[0, 0, :2] = 1.0  # energy in the lowest two frequency rows of channel 0
    low = pool_features(fmap, "freq").view(2, 4)
    high = pool_features(fmap.flip(2), "freq").view(2, 4)
    assert low[0].tolist() == [1.0, 0.0, 0.0, 0.0] and high[0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert torch.equal(pool_features(fmap, "avg"), pool_features(fmap.flip(2), "avg"))
    steady, pulsing = torch.ones(1, 1, 2, 6), torch.tensor([0.0, 2.0] * 3).expand(1, 1, 2, 6)
    a, b = pool_features(steady, "meanstd"), pool_features(pulsing, "meanstd")
    assert a[0, 0] == b[0, 0] == 1.0 and a[0, 1] < 0.01 < 0.99 < b[0, 1]


def test_save_load_keeps_width_pool_and_classes(tmp_path):
    enc = Encoder(dataclasses.replace(CFG, width=8, pool="freq"), N_MELS).eval()
    enc.classes = ("fan/section_00/", "valve/section_00/")
    path = save_encoder(enc, tmp_path / "encoder.pt", Config())
    loaded, _, _ = load_encoder(path)
    assert loaded.cfg == enc.cfg and loaded.classes == enc.classes
    x = torch.randn(2, N_MELS, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), enc.embed(x), rtol=0, atol=0)


def test_paper_encoder_is_resnet18_with_its_projection_head():
    """Width, pool and freq_stride at their defaults build exactly the paper's network."""
    enc = Encoder(EncoderConfig(), 128)
    # ResNet-18 without fc and with a 1-channel stem, plus Linear(512, 512) and Linear(512, 128)
    assert sum(p.numel() for p in enc.parameters()) == 11_170_240 + 262_656 + 65_664
    assert enc.backbone_dim == 512


def test_freq_stride_one_keeps_frequency_rows_for_the_pooling():
    cfg = dataclasses.replace(CFG, width=4, pool="freq", freq_bands=8, freq_stride=1)
    enc = Encoder(cfg, N_MELS).eval()
    x = torch.randn(2, N_MELS, 64) * 10 - 50
    with torch.no_grad():
        fmap = enc.layers(enc.stem(((x - enc.mel_mean[:, None]) / enc.mel_std[:, None])[:, None]))
        assert fmap.shape == (2, 32, N_MELS // 4, 2)  # time still strided by 32, frequency by 4
        assert enc.backbone(x).shape == (2, 32 * 8) and enc.embedding_dim == 32 * 8


def test_tdnn_sees_every_mel_band_and_pools_over_time(tmp_path):
    cfg = EncoderConfig(arch="tdnn", width=4, pool="meanstd", embedding_dim=8, head_hidden_dim=8)
    torch.manual_seed(0)
    encoder = Encoder(cfg, 16).eval()
    assert encoder.backbone_dim == 2 * 8 * 4
    first = encoder.layers[0]
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 16  # bands = channels
    x = torch.randn(2, 16, 40)
    assert encoder.backbone(x).shape == (2, 64) and encoder(x).shape == (2, 8)
    # a change in one band only still reaches the embedding (no frequency downsampling)
    y = x.clone()
    y[:, 15] += 3.0
    assert not torch.allclose(encoder.backbone(x), encoder.backbone(y))
    assert encoder.backbone(torch.randn(1, 16, 9)).shape == (1, 64)  # any length
    config = dataclasses.replace(Config(), encoder=cfg).with_overrides({"features.n_mels": 16})
    path = save_encoder(encoder, tmp_path / "t.pt", config)
    loaded, _, _ = load_encoder(path)
    assert loaded.cfg.arch == "tdnn"
    torch.testing.assert_close(loaded.backbone(x), encoder.backbone(x))


def test_tdnn_refuses_frequency_band_pooling_and_unknown_archs():
    for arch, pool in (("tdnn", "freq"), ("vgg", "avg")):
        with pytest.raises(AsdError, match="encoder.arch"):
            Config().with_overrides({"encoder.arch": arch, "encoder.pool": pool}).validate()


@pytest.mark.parametrize(
    "overrides",
    [
        {"pool": "avg"},
        {"pool": "freq", "freq_bands": 4, "freq_stride": 1},
        {"pool": "avg", "arch": "tdnn"},
    ],
)
def test_per_time_step_frames_pooled_by_the_mean_are_the_clip_embedding(overrides):
    torch.manual_seed(0)
    cfg = dataclasses.replace(EncoderConfig(width=8, embed_from="backbone"), **overrides)
    encoder = Encoder(cfg, 32).eval()
    x = torch.randn(3, 32, 64)
    with torch.no_grad():
        frames = encoder.frames(x)  # (B, D, T')
        assert frames.shape[:2] == (3, encoder.backbone_dim) and frames.shape[2] > 1
        torch.testing.assert_close(frames.mean(dim=2), encoder.embed(x), rtol=1e-5, atol=1e-6)
