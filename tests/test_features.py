import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio.transforms as T

from asd import features
from asd.config import FeatureConfig
from asd.data import index as data
from asd.errors import AsdError
from asd.features import FeatureSet, LogMel, extract_features, load_features, log_mel

CFG = FeatureConfig()
SR = CFG.sample_rate


# ------------------------------------------------------------------ log-mel


def test_log_mel_matches_torchaudio_and_counts_frames():
    x = torch.randn(2, SR * 10) * 0.1
    ref = T.MelSpectrogram(SR, n_fft=2048, hop_length=512, n_mels=128, f_min=0.0, f_max=8000.0)
    expected = 10 * torch.log10(ref(x).clamp_min(1e-10))
    out = log_mel(x, CFG)
    assert out.shape == (2, 128, 313)
    assert torch.allclose(out, expected, atol=1e-3)
    for n in (1025, 16001, 23457):
        assert log_mel(torch.randn(n), CFG).shape == (128, 1 + n // 512)
    assert LogMel(CFG)(x).shape == out.shape


def test_log_mel_floor_and_short_input():
    assert torch.all(log_mel(torch.zeros(SR), CFG) == CFG.top_db_floor)
    with pytest.raises(AsdError, match="n_fft"):
        log_mel(torch.zeros(1000), CFG)


def test_log_mel_batch_consistency():
    x = torch.randn(3, 2, 12_345)
    together = log_mel(x, CFG)
    assert together.shape == (3, 2, 128, 25)
    alone = torch.stack([torch.stack([log_mel(c, CFG) for c in row]) for row in x])
    assert torch.allclose(together, alone, atol=1e-4)


# ------------------------------------------------------------------ FeatureSet


def _index(n, splits=None, labels=None, paths=None):
    return pd.DataFrame(
        {
            "path": paths or [f"/x/{i}.wav" for i in range(n)],
            "machine": ["fan"] * n,
            "section": [0] * n,
            "domain": ["source"] * n,
            "split": splits or ["train"] * n,
            "label": labels or ["normal"] * n,
            "clip": [f"{i}.wav" for i in range(n)],
        }
    )


def test_featureset_round_trip_padded_subset():
    rng = np.random.default_rng(0)
    mels = [rng.normal(size=(128, f)).astype(np.float32) * 10 for f in (5, 9, 3)]
    fs = FeatureSet.from_arrays(mels, _index(3), CFG)
    assert len(fs) == 3 and fs.mel.shape == (17, 128) and fs.mel.dtype == np.float16
    assert fs.index["offset"].tolist() == [0, 5, 14]
    for i, m in enumerate(mels):
        np.testing.assert_allclose(fs.clip(i), m, atol=0.02)
    batch, lengths = fs.padded([2, 0])
    assert batch.shape == (2, 128, 5) and batch.dtype == np.float32
    assert lengths.tolist() == [3, 5] and lengths.dtype == np.int64
    np.testing.assert_allclose(batch[0, :, :3], fs.clip(2))
    assert np.all(batch[0, :, 3:] == CFG.top_db_floor)
    sub = fs.subset(np.array([False, True, True]))
    assert len(sub) == 2 and np.shares_memory(sub.mel, fs.mel)
    np.testing.assert_array_equal(sub.clip(0), fs.clip(1))
    np.testing.assert_array_equal(fs.subset([2]).clip(0), fs.clip(2))
    np.testing.assert_array_equal(sub.mean, fs.mean)
    with pytest.raises(AsdError):
        FeatureSet.from_arrays(mels[:2], _index(3), CFG)


def test_stats_from_normal_train_clips_only():
    mels = [np.full((128, 4), v, np.float32) for v in (-10.0, -30.0, 50.0, 70.0)]
    idx = _index(
        4,
        splits=["train", "train", "test", "train"],
        labels=["normal", "normal", "normal", "anomaly"],
    )
    fs = FeatureSet.from_arrays(mels, idx, CFG)
    np.testing.assert_allclose(fs.mean, -20.0)
    np.testing.assert_allclose(fs.std, 10.0)
    # no normal train clip: every clip counts
    fs = FeatureSet.from_arrays(mels, _index(4, splits=["test"] * 4), CFG)
    np.testing.assert_allclose(fs.mean, 20.0)
    assert fs.mean.dtype == np.float32 and fs.std.shape == (128,)


# ------------------------------------------------------------------ extraction and cache


@pytest.fixture()
def clips(tmp_path):
    """Four short wav clips of different lengths in a DCASE-like tree."""
    folder = tmp_path / "dev_data" / "raw" / "fan" / "train"
    folder.mkdir(parents=True)
    seconds = [1.0, 1.5, 1.0, 0.7]
    splits = ["train", "train", "train", "test"]
    labels = ["normal", "normal", "normal", "anomaly"]
    paths = []
    for i, sec in enumerate(seconds):
        t = np.arange(int(sec * SR)) / SR
        wave = 0.1 * np.sin(2 * math.pi * (300 + 100 * i) * t) + 0.01 * np.random.default_rng(
            i
        ).normal(size=t.size)
        path = folder / f"section_00_source_train_normal_{i:04d}.wav"
        sf.write(path, wave.astype(np.float32), SR)
        paths.append(str(path))
    return _index(4, splits=splits, labels=labels, paths=paths)


def test_extract_writes_cache_then_reuses_it(clips, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    fs = extract_features(clips, CFG, cache, progress=False)
    key = features.cache_key(clips, CFG)
    folder = cache / key
    assert sorted(p.name for p in cache.iterdir()) == [key, "content-hashes.json"]
    assert {p.name for p in folder.iterdir()} == {"mel.npy", "index.json", "meta.json"}
    assert isinstance(fs.mel, np.memmap)
    assert fs.index["frames"].tolist() == [32, 47, 32, 22]
    wave = torch.from_numpy(data.read_wav(clips.path[1], SR))
    np.testing.assert_allclose(fs.clip(1), log_mel(wave, CFG).numpy(), atol=0.1)
    train = np.concatenate([fs.clip(i) for i in range(3)], axis=1)
    np.testing.assert_allclose(fs.mean, train.mean(axis=1), atol=1e-3)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n_clips"] == 4 and meta["total_frames"] == 133

    def no_read(*args, **kwargs):
        raise AssertionError("cache hit must not read audio")

    monkeypatch.setattr(features.data, "read_wav", no_read)
    again = extract_features(clips, CFG, cache, progress=False)
    np.testing.assert_array_equal(again.mel, fs.mel)
    np.testing.assert_array_equal(again.std, fs.std)
    assert again.config == CFG
    monkeypatch.undo()

    other = FeatureConfig(n_mels=64)
    fs64 = extract_features(clips, other, cache, progress=False)
    assert features.cache_key(clips, other) != key
    assert fs64.mel.shape == (133, 64) and len(list(cache.iterdir())) == 3


def test_partial_caches_are_ignored(clips, tmp_path):
    cache = tmp_path / "cache"
    key = features.cache_key(clips, CFG)
    stale = cache / f".tmp-{key}-123-deadbeef"  # a killed extraction's temp folder
    stale.mkdir(parents=True)
    (stale / "mel.npy").write_bytes(b"garbage")
    half = cache / key  # a target without its meta.json is not a cache
    half.mkdir()
    (half / "mel.npy").write_bytes(b"garbage")
    fs = extract_features(clips, CFG, cache, progress=False)
    assert len(fs) == 4 and features._is_complete(half)
    assert load_features(half).mel.shape == fs.mel.shape


def test_rename_race_keeps_the_first_cache(clips, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = extract_features(clips, CFG, tmp_path / "other", progress=False)
    key = features.cache_key(clips, CFG)
    real = features._write_cache

    def slow_writer(index, cfg, folder, key_, fingerprint, progress):
        real(index, cfg, folder, key_, fingerprint, progress)
        shutil.copytree(tmp_path / "other" / key, cache / key)  # another process won

    monkeypatch.setattr(features, "_write_cache", slow_writer)
    fs = extract_features(clips, CFG, cache, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == [key, "content-hashes.json"]  # tmp gone
    np.testing.assert_array_equal(fs.mel, first.mel)


def test_load_features_errors(tmp_path):
    with pytest.raises(AsdError, match="feature cache"):
        load_features(tmp_path / "missing")
