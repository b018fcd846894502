from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from asd.config import FeatureConfig
from asd.data.index import index_dataset, read_wav
from asd.data.synth import temporal as synth_temporal
from asd.data.synth.machines import SPECS
from asd.data.synth.signals import background
from asd.data.synth.temporal import TEMPORAL
from asd.data.synth.tree import synthesize
from asd.features import log_mel

SR = 16_000
MELS = FeatureConfig(n_mels=64)


def _frame_db(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(clip-mean log-mel minus its level, per-frame energy in dB) of one waveform."""
    mel = log_mel(torch.from_numpy(x.astype(np.float32)), MELS).numpy()
    mean = mel.mean(axis=1)
    return mean - mean.mean(), 10 * np.log10(np.mean(10 ** (mel / 10), axis=0) + 1e-12)


def _periodicity(e: np.ndarray) -> float:
    """Highest normalised autocorrelation of the frame energies at lags of 0.1-1 s."""
    e = e - e.mean()
    ac = np.correlate(e, e, "full")[len(e) - 1 :] / (e @ e + 1e-9)
    return float(ac[3:32].max())


STATISTIC = {
    "irregular": lambda e: -_periodicity(e),  # a steady pace is lost
    "dropout": lambda e: float(np.median(e) - e.min()),  # deep dips
    "rhythm": lambda e: float(e.std()),  # the level pulses
    "transients": lambda e: float(e.max() - np.median(e)),  # rare peaks
}


MACHINE = {
    "irregular": "slider",
    "dropout": "gearbox",
    "rhythm": "bearing",
    "transients": "gearbox",
}
"""A machine type that gets each kind in the synth tree."""


def _normal(machine: str) -> np.ndarray:
    """Four normal 4 s sounds of one machine type, before the factory noise."""
    t = np.arange(4 * SR) / SR
    rng = np.random.default_rng(0)
    return SPECS[machine].render(rng, t, np.ones((4, 1)), np.zeros((4, 1)), SR)


def _with_noise(x: np.ndarray) -> np.ndarray:
    """Factory noise 10 dB down, as the synth tree mixes it after the machine sound."""
    return x + 0.3 * background(np.random.default_rng(2), x.shape[0], x.shape[1], SR)


@pytest.mark.parametrize("kind", sorted(TEMPORAL))
def test_each_kind_keeps_energy_and_spectrum_and_grades_a_temporal_statistic(kind):
    assert kind in synth_temporal.MACHINE_KINDS[MACHINE[kind]]
    normal = _normal(MACHINE[kind])
    base = [_frame_db(x) for x in _with_noise(normal)]
    change, shift = {}, {}
    for severity in (0.3, 1.0):
        rng = np.random.default_rng(1)
        out = TEMPORAL[kind](rng, normal, np.full((4, 1), severity), SR)
        assert out.shape == normal.shape
        np.testing.assert_allclose(np.sqrt((out**2).mean(1)), np.sqrt((normal**2).mean(1)))
        seen = [_frame_db(x) for x in _with_noise(out)]
        stat = STATISTIC[kind]
        change[severity] = np.mean(
            [stat(b[1]) - stat(a[1]) for a, b in zip(base, seen, strict=True)]
        )
        shift[severity] = np.mean(
            [np.abs(b[0] - a[0]).mean() for a, b in zip(base, seen, strict=True)]
        )
    # The temporal statistic moves, more at higher severity ...
    assert 0 < change[0.3] < change[1.0]
    # ... while the clip-mean spectrum moves far less than the statistic does.
    assert shift[1.0] < 0.5 * abs(change[1.0]) or shift[1.0] < 0.5
    zero = TEMPORAL[kind](np.random.default_rng(1), normal, np.zeros((4, 1)), SR)
    np.testing.assert_allclose(zero, normal)  # severity 0 is a normal clip


def _scores(root: Path, machine: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, clip-mean z-distance, temporal z-distance) of one machine's test clips."""
    index = index_dataset(root)
    rows = index[index.machine == machine]
    means, temporal = [], []
    for path in rows.path:
        mean, e = _frame_db(read_wav(path, SR))
        means.append(mean)
        temporal.append([STATISTIC[k](e) for k in sorted(STATISTIC)])
    train = (rows.split == "train").to_numpy()
    labels = (rows.label[~train] == "anomaly").to_numpy()

    def distance(x: np.ndarray) -> np.ndarray:
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        return np.abs((x[~train] - mu) / sd).mean(1)

    return labels, distance(np.array(means)), distance(np.array(temporal))


def test_synth_output_has_temporal_anomalies_a_clip_mean_cannot_see(tmp_path, monkeypatch):
    args = dict(train_source=30, train_target=3, test_per_domain=20, seconds=2.0)
    machines = ("gearbox", "bearing", "slider", "fan")
    mixed = _files(synthesize(tmp_path / "mixed", machines=machines, **args))
    monkeypatch.setattr(synth_temporal, "TEMPORAL_SHARE", 1.0)
    only = synthesize(tmp_path / "temporal", machines=machines, **args)
    for machine in ("gearbox", "bearing", "slider"):
        labels, mean_distance, temporal_distance = _scores(only, machine)
        assert roc_auc_score(labels, temporal_distance) >= 0.8, machine
        assert roc_auc_score(labels, mean_distance) <= 0.7, machine
    # Normal clips, and machine types without temporal kinds, do not change with the share.
    temporal = _files(only)
    same = [k for k in mixed if "normal" in k or "/fan/" in k]
    assert same and all(mixed[k] == temporal[k] for k in same)
    changed = [k for k in mixed if "anomaly" in k and mixed[k] != temporal[k]]
    assert any("gearbox" in k for k in changed) and not any("/fan/" in k for k in changed)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}
