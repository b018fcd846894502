import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from asd.config import FeatureConfig
from asd.data.index import DEV_MACHINES, EVAL_MACHINES
from asd.data.synth.machines import SPECS
from asd.data.synth.tree import record
from asd.features import log_mel

SR = 16_000


def test_every_dcase_machine_type_has_a_spec_with_both_domains():
    assert set(SPECS) == set(DEV_MACHINES) | set(EVAL_MACHINES)
    for spec in SPECS.values():
        assert spec.source and spec.target
        assert {op for _, op in spec.target}.isdisjoint(op for _, op in spec.source)


@pytest.mark.parametrize("machine", DEV_MACHINES)
def test_a_recipe_renders_normal_sound_at_rms_one_and_severity_changes_it(machine):
    t = np.arange(SR // 2) / SR
    op = np.ones((4, 1))
    render = SPECS[machine].render
    normal = render(np.random.default_rng(0), t, op, np.zeros((4, 1)), SR)
    anomalous = render(np.random.default_rng(0), t, op, np.ones((4, 1)), SR)
    assert normal.shape == (4, t.size) and np.isfinite(normal).all()
    np.testing.assert_allclose(np.sqrt(np.mean(normal**2, axis=-1)), 1.0, rtol=1e-6)
    assert not np.allclose(normal, anomalous)


EVENT_TYPES = ("valve", "slider", "ToyTrain")
"""Anomalies are short events: the per-band maximum over time sees them, the clip mean not."""
STATIONARY_TYPES = ("ToyCar", "bearing", "fan")
"""Anomalies are steady spectral changes: the clip mean sees them better than the maximum."""


def _pooling_aucs(machine: str, seed: int = 0) -> dict[str, float]:
    """AUC of a Ledoit-Wolf Mahalanobis distance on each pooling of the project's log-mel.

    20 normal training clips of 2 s, 20 normal and 20 anomalous test clips (severity spread
    over (0.1, 1]), recorded as the synth tree records them (factory noise, microphone gain).
    """
    t = np.arange(2 * SR) / SR
    render = SPECS[machine].render

    def clips(stream: int, severity: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([seed, stream])
        sound = render(rng, t, np.ones_like(severity), severity, SR)
        wave = torch.from_numpy(record(rng, sound, SR).astype(np.float32))
        return log_mel(wave, FeatureConfig()).numpy().astype(np.float64)  # (n, mels, frames)

    train = clips(0, np.zeros((20, 1)))
    test = np.concatenate([clips(1, np.zeros((20, 1))), clips(2, np.linspace(0.1, 1, 20)[:, None])])
    labels = np.r_[np.zeros(20), np.ones(20)]
    pools = {
        "mean": lambda m: m.mean(-1),
        "meanstd": lambda m: np.concatenate([m.mean(-1), m.std(-1)], -1),
        "max": lambda m: m.max(-1),
    }
    aucs = {}
    for name, pool in pools.items():
        scores = LedoitWolf().fit(pool(train)).mahalanobis(pool(test))
        aucs[name] = float(roc_auc_score(labels, scores))
    return aucs


@pytest.mark.parametrize("machine", EVENT_TYPES)
def test_event_anomalies_raise_the_per_band_max_not_the_clip_mean(machine):
    aucs = _pooling_aucs(machine)
    assert aucs["max"] >= 0.75, aucs
    assert aucs["max"] - aucs["mean"] >= 0.15, aucs


@pytest.mark.parametrize("machine", STATIONARY_TYPES)
def test_stationary_anomalies_move_the_clip_mean_more_than_the_max(machine):
    aucs = _pooling_aucs(machine)
    assert aucs["mean"] >= 0.7, aucs
    assert aucs["mean"] - aucs["max"] >= 0.1, aucs
