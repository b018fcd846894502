import dataclasses

import pytest

from asd.config import Config
from asd.errors import AsdError


def test_defaults_are_the_papers_settings():
    cfg = Config()
    assert cfg.loss.temperature == 0.05
    assert cfg.train.batch_size == 48
    assert cfg.train.lr == 0.5
    assert cfg.train.restarts == 3
    assert cfg.augment.n_views == 6
    assert (cfg.features.n_fft, cfg.features.hop_length, cfg.features.n_mels) == (2048, 512, 128)
    assert cfg.encoder.embedding_dim == 128


def test_overrides_replace_only_named_keys():
    cfg = Config().with_overrides({"loss.temperature": 0.1, "train.epochs": 3})
    assert cfg.loss.temperature == 0.1
    assert cfg.train.epochs == 3
    assert cfg.train.batch_size == 48
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.loss.temperature = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss.tau": 0.1}, "unknown config key 'loss.tau'"),
        ({"nope.x": 1}, "unknown config key 'nope.x'"),
        ({"train.epochs": "many"}, "needs an integer"),
        ({"train.epochs": 2.5}, "needs an integer"),
        ({"train.amp": 3}, "needs true or false"),
        ({"augment.recipes": "noise"}, "needs a list"),
        ({"loss.temperature": -1.0}, "loss.temperature must be positive"),
        ({"augment.pitch_max_semitones": 13.0}, "pitch"),
        ({"augment.noise_snr_db_min": 30.0}, "noise_snr"),
        ({"augment.recipes": ["warp"]}, "augment.recipes"),
        ({"scoring.estimator": "mcd"}, "scoring.estimator"),
        ({"scoring.family": "mixture"}, "scoring.family"),
        ({"scoring.reference": "median"}, "scoring.reference"),
        ({"scoring.knn_k": 0}, "scoring.knn_k"),
        ({"scoring.fusion_weight": 1.5}, "scoring.fusion_weight"),
        ({"scoring.threshold_folds": 1}, "scoring.threshold_folds"),
        ({"train.batch_size": 1}, "batch_size"),
    ],
)
def test_bad_overrides_raise_naming_the_setting(overrides, message):
    with pytest.raises(AsdError, match=message):
        Config().with_overrides(overrides)


def test_harmless_conversions_from_yaml_and_mlflow():
    cfg = Config().with_overrides(
        {"train.lr": 1, "train.epochs": 4.0, "train.amp": "false", "augment.recipes": ["noise"]}
    )
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 4
    assert cfg.train.amp is False
    assert cfg.augment.recipes == ("noise",)


def test_flat_and_json_round_trip():
    cfg = Config().with_overrides({"train.epochs": 2, "encoder.embed_from": "projection"})
    flat = cfg.to_flat()
    assert flat["loss.temperature"] == cfg.loss.temperature
    assert isinstance(flat["augment.recipes"], list)
    assert Config.from_flat(flat) == cfg
    assert Config.from_json(cfg.to_json()) == cfg


def test_feature_key_changes_with_feature_settings_only():
    a = Config()
    b = a.with_overrides({"loss.temperature": 0.2})
    c = a.with_overrides({"features.n_mels": 64})
    assert a.features.key() == b.features.key()
    assert a.features.key() != c.features.key()


def test_overrides_resolve_each_sections_hints_once(monkeypatch):
    # checking a space's 4,096 corners took ~17 s when every override resolved the hints again
    import typing

    from asd import config

    monkeypatch.setattr(config, "_HINTS", {})
    calls = []
    real = typing.get_type_hints
    monkeypatch.setattr(typing, "get_type_hints", lambda cls: calls.append(cls) or real(cls))
    for epochs in range(1, 30):
        Config().with_overrides({"train.epochs": epochs, "loss.temperature": 0.1})
    assert sorted(c.__name__ for c in calls) == ["LossConfig", "TrainConfig"]


def test_members_are_checked_with_the_pooling_grammar():
    ok = Config().with_overrides({"scoring.members": ["logmel/p90", "encoder/own/knn"]})
    assert ok.scoring.members == ("logmel/p90", "encoder/own/knn")
    for bad, message in [
        ("logmel/own", "only encoder frames pool 'own'"),
        ("logmel/median", "unknown pooling 'median'"),
        ("wave/mean", "frames must be one of"),
        ("logmel/mean/svm", "scorer must be one of"),
        ("logmel", "must be 'frames/pooling'"),
    ]:
        with pytest.raises(AsdError, match=message):
            Config().with_overrides({"scoring.members": [bad]})
