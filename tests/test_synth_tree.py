from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from asd.data.index import DEV_MACHINES, index_dataset, parse_clip_name, read_wav
from asd.data.synth.tree import record, synthesize
from asd.errors import AsdError

SMALL = dict(train_source=30, train_target=3, test_per_domain=10, seconds=1.0)


@pytest.fixture(scope="module")
def dev_tree(tmp_path_factory) -> Path:
    """All seven dev machines, small enough to write in a few seconds."""
    return synthesize(tmp_path_factory.mktemp("synth"), **SMALL)


@pytest.fixture(scope="module")
def spectra(dev_tree):
    """(index, clip-mean log spectra (clips, 32 bands), level removed): a simple detector's view."""
    index = index_dataset(dev_tree)
    return index, np.stack([_log_spectrum(read_wav(p, 16000)) for p in index.path])


def _log_spectrum(x: np.ndarray, bands: int = 32) -> np.ndarray:
    frames = x[: len(x) // 1024 * 1024].reshape(-1, 1024) * np.hanning(1024)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(0)[1:]
    edges = np.unique(np.geomspace(1, len(power), bands + 1).astype(int))
    db = 10 * np.log10(np.add.reduceat(power, edges[:-1]) + 1e-12)
    return db - db.mean()  # the recording level varies on purpose: compare shapes only


def test_layout_and_names_follow_dcase(dev_tree):
    for machine in DEV_MACHINES:
        train = sorted((dev_tree / "dev_data/raw" / machine / "train").glob("*.wav"))
        test = sorted((dev_tree / "dev_data/raw" / machine / "test").glob("*.wav"))
        assert len(train) == 33 and len(test) == 40
        names = [parse_clip_name(p.name) for p in train + test]
        assert all(n.section == 0 and n.attributes for n in names)
        assert sum(n.domain == "target" for n in names[:33]) == 3
        info = sf.info(str(train[0]))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            16000,
            1,
            "PCM_16",
            16000,
        )
    # Source and target differ in an operating attribute, as in the real names.
    car = [parse_clip_name(p.name) for p in (dev_tree / "dev_data/raw/ToyCar/train").iterdir()]
    source = {n.attributes["spd"] for n in car if n.domain == "source"}
    target = {n.attributes["spd"] for n in car if n.domain == "target"}
    assert source and target and not source & target


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    args = dict(machines=("bearing", "valve"), train_source=3, train_target=1, test_per_domain=1)
    args.update(seconds=0.25, eval_machines=("grinder",))
    a = _files(synthesize(tmp_path / "a", seed=7, **args))
    b = _files(synthesize(tmp_path / "b", seed=7, **args))
    c = _files(synthesize(tmp_path / "c", seed=8, **args))
    assert a == b
    assert len(a) == len(c)  # names may differ: attributes are drawn per clip
    wavs = [k for k in a if k.endswith(".wav") and k in c]
    assert wavs and all(a[k] != c[k] for k in wavs)
    # A machine's clips do not depend on which other machines are asked for.
    d = _files(synthesize(tmp_path / "d", seed=7, **{**args, "machines": ("valve",)}))
    assert all(d[k] == a[k] for k in d if k.startswith("dev_data"))


def test_every_machine_has_its_own_spectrum(spectra):
    """Mean spectra differ by more than clips vary, and a clip's machine is recognisable."""
    index, spec = spectra
    normal_train = (index.split == "train").to_numpy()
    machine = index.machine.to_numpy()
    means, spreads = [], []
    for m in DEV_MACHINES:
        rows = spec[normal_train & (machine == m)]
        means.append(rows.mean(0))
        spreads.append(np.sqrt(((rows - rows.mean(0)) ** 2).mean(1)).mean())  # dB RMS to mean
    means = np.stack(means)  # (machines, bands)
    within = float(np.mean(spreads))
    gaps = np.sqrt(((means[:, None] - means[None]) ** 2).mean(-1))  # (machines, machines) dB
    between = gaps[np.triu_indices(len(DEV_MACHINES), 1)]
    assert between.min() > within and np.median(between) > 2 * within, (between, within)
    nearest = np.array(DEV_MACHINES)[((spec[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    assert (nearest == machine)[normal_train].mean() > 0.9


def test_target_domain_is_shifted(spectra):
    index, spec = spectra
    for machine in ("ToyCar", "fan", "gearbox"):
        rows = (index.machine == machine) & (index.label == "normal")
        src = spec[(rows & (index.domain == "source")).to_numpy()]
        tgt = spec[(rows & (index.domain == "target")).to_numpy()]
        gap = np.sqrt(((src.mean(0) - tgt.mean(0)) ** 2).mean())
        spread = np.sqrt(((src - src.mean(0)) ** 2).mean(1)).mean()
        assert gap > 0.5 * spread, (machine, gap, spread)


def test_anomalies_are_detectable_but_not_trivially(spectra):
    """Mahalanobis on clip-mean log spectra: clearly above chance, clearly below perfect."""
    index, spec = spectra
    aucs = {}
    for machine in DEV_MACHINES:
        rows = (index.machine == machine).to_numpy()
        train = rows & (index.split == "train").to_numpy()
        test = rows & (index.split == "test").to_numpy()
        scores = LedoitWolf().fit(spec[train]).mahalanobis(spec[test])
        aucs[machine] = roc_auc_score(index.label[test] == "anomaly", scores)
    values = np.array(list(aucs.values()))
    assert np.median(values) > 0.65, aucs
    assert (values > 0.55).sum() >= 5, aucs
    assert (values < 0.98).all(), aucs


def test_eval_machines_get_unlabeled_names_and_ground_truth(tmp_path):
    root = synthesize(
        tmp_path,
        machines=("fan",),
        train_source=4,
        train_target=1,
        test_per_domain=3,
        seconds=0.25,
        eval_machines=("ToyDrone", "shaker"),
    )
    for machine in ("ToyDrone", "shaker"):
        test = sorted(p.name for p in (root / "eval_data/raw" / machine / "test").iterdir())
        assert test == [f"section_00_{i:04d}.wav" for i in range(12)]
        labels = (root / "ground_truth" / f"ground_truth_{machine}_section_00_test.csv").read_text()
        domains = root / "ground_truth/domain" / f"ground_truth_{machine}_section_00_test.csv"
        rows = [line.split(",") for line in labels.splitlines()]
        assert [r[0] for r in rows] == test and sorted(int(r[1]) for r in rows) == [0] * 6 + [1] * 6
        assert sum(int(line.split(",")[1]) for line in domains.read_text().splitlines()) == 6
        train = list((root / "eval_data/raw" / machine / "train").iterdir())
        assert len(train) == 5 and all(parse_clip_name(p.name).label == "normal" for p in train)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"machines": ("pump",)},
        {"eval_machines": ("fan",)},
        {"train_source": 0},
        {"test_per_domain": 0},
        {"seconds": 0.0},
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(AsdError):
        synthesize(tmp_path, **kwargs)


TINY = {"machines": ("fan",), "train_source": 2, "train_target": 1, "test_per_domain": 1,
        "seconds": 0.2}  # fmt: skip


def test_writing_over_a_tree_of_other_settings_is_refused_and_overwrite_replaces_it(tmp_path):
    out = synthesize(tmp_path / "t", seed=1, **TINY)
    before = _files(out)
    with pytest.raises(AsdError, match="seconds, seed differ.*--overwrite"):
        synthesize(out, seed=2, **{**TINY, "seconds": 0.3})
    assert _files(out) == before  # nothing mixed in
    synthesize(out, seed=1, **TINY)  # the same settings: the same tree again
    assert _files(out) == before
    synthesize(out, seed=2, overwrite=True, **{**TINY, "train_source": 1})
    assert _files(out) == _files(
        synthesize(tmp_path / "fresh", seed=2, **{**TINY, "train_source": 1})
    )


def test_a_tree_without_its_settings_record_is_not_written_over(tmp_path):
    out = synthesize(tmp_path / "t", **TINY)
    (out / "synth.json").unlink()
    with pytest.raises(AsdError, match="no synth.json record"):
        synthesize(out, **TINY)


def test_the_microphone_hears_the_machine_over_factory_noise_at_a_varying_gain():
    sr, n = 16000, 64
    t = np.arange(sr) / sr
    machine = np.sqrt(2) * np.sin(2 * np.pi * 997 * t) * np.ones((n, 1))  # (n, samples), RMS 1
    heard = record(np.random.default_rng(0), machine, sr)
    assert heard.shape == machine.shape
    level = np.sqrt((heard**2).mean(axis=1))
    assert level.min() >= 0.05 * 10 ** (-4 / 20) - 1e-9
    assert level.max() <= 0.05 * 10 ** (4 / 20) + 1e-9
    # the machine's part of each clip, and what is left: factory noise 3-15 dB under it
    part = (heard * machine).mean(axis=1) / (machine**2).mean(axis=1)
    noise = heard - part[:, None] * machine
    snr_db = 20 * np.log10(part / np.sqrt((noise**2).mean(axis=1)))
    assert snr_db.min() > 2.5 and snr_db.max() < 15.5
    assert snr_db.max() - snr_db.min() > 6  # drawn per clip, over most of the range
    assert level.max() / level.min() > 10 ** (4 / 20)
