import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd.data.index import (
    COLUMNS,
    DEV_MACHINES,
    EVAL_MACHINES,
    ClipName,
    fingerprint,
    index_dataset,
    parse_clip_name,
    read_wav,
)
from asd.errors import AsdError

# --------------------------------------------------------------------------- names


def test_machine_lists_match_dcase_2023():
    assert DEV_MACHINES == ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve")
    assert len(EVAL_MACHINES) == 7 and "Vacuum" in EVAL_MACHINES


def test_parse_dev_name_with_attributes():
    name = parse_clip_name("section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav")
    assert name == ClipName(
        0, "source", "train", "normal", 0, {"car": "A1", "spd": "28V", "mic": "1"}
    )


def test_parse_dev_test_name_no_attribute():
    name = parse_clip_name("section_00_target_test_anomaly_0012_noAttribute.wav")
    assert (name.section, name.domain, name.split, name.label, name.index) == (
        0,
        "target",
        "test",
        "anomaly",
        12,
    )
    assert name.attributes == {}


def test_parse_name_without_attribute_part_and_with_a_folder():
    name = parse_clip_name("/data/fan/train/section_01_source_train_normal_0990.wav")
    assert name.section == 1 and name.index == 990 and name.attributes == {}


def test_parse_attribute_values_with_dots_and_dashes():
    name = parse_clip_name("section_00_source_train_normal_0001_m-n_W_volt_1.0_wt_30.wav")
    assert name.attributes == {"m-n": "W", "volt": "1.0", "wt": "30"}


def test_parse_odd_attribute_count_keeps_leftover_key():
    name = parse_clip_name("section_00_source_train_normal_0001_vel_6_loc.wav")
    assert name.attributes == {"vel": "6", "loc": ""}


def test_parse_eval_test_name_has_no_domain_or_label():
    name = parse_clip_name("section_00_0042.wav")
    assert name == ClipName(0, None, None, None, 42, {})


@pytest.mark.parametrize(
    "bad",
    [
        "foo.wav",
        "section_00_source_train_normal.wav",
        "section_xx_source_train_normal_0000.wav",
        "section_00_middle_train_normal_0000.wav",
        "section_00_source_train_normal_0000_a b.wav",
        "section_00_source_train_normal_0000_.wav",
        "section_00_0000.flac",
    ],
)
def test_parse_bad_names_raise_naming_the_file(bad):
    with pytest.raises(AsdError, match="outside the DCASE pattern|bad attribute") as err:
        parse_clip_name(bad)
    assert bad in str(err.value)


# --------------------------------------------------------------------------- index


@pytest.fixture(scope="module")
def tree(synth_tree) -> Path:
    """Two dev machines and one eval machine: a tiny but complete DCASE tree."""
    return synth_tree(
        machines=("fan", "valve"), train_source=5, seconds=0.25, eval_machines=("Vacuum",)
    )


def test_index_counts_per_machine_split_domain_label(tree):
    index = index_dataset(tree)
    assert list(index.columns) == COLUMNS
    dev = index[index.subset == "dev_data"]
    counts = dev.groupby(["machine", "split", "domain", "label"]).size()
    for machine in ("fan", "valve"):
        assert counts[(machine, "train", "source", "normal")] == 5
        assert counts[(machine, "train", "target", "normal")] == 2
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                assert counts[(machine, "test", domain, label)] == 2
    ev = index[index.subset == "eval_data"]
    assert set(ev.machine) == {"Vacuum"}
    assert (ev[ev.split == "test"].label == "unknown").all()
    assert (ev[ev.split == "test"].domain == "unknown").all()
    assert (ev[ev.split == "train"].label == "normal").all()
    assert ev.attributes.map(len).eq(0).all()  # Vacuum clips are noAttribute
    assert index.section.dtype.kind == "i"


def test_index_is_sorted_and_deterministic(tree):
    a, b = index_dataset(tree), index_dataset(tree)
    pd.testing.assert_frame_equal(a, b)
    keys = a[["subset", "machine", "section", "split", "clip"]].apply(tuple, axis=1).tolist()
    assert keys == sorted(keys)
    assert all(Path(p).is_file() for p in a.path)
    assert a.loc[a.machine == "fan", "attributes"].iloc[0]["m-n"] == "W"


def test_index_machine_filter(tree):
    index = index_dataset(tree, machines=["valve"])
    assert set(index.machine) == {"valve"}
    with pytest.raises(AsdError, match="found: Vacuum, fan, valve") as err:
        index_dataset(tree, machines=["valve", "pump"])
    assert "pump" in str(err.value) and str(tree) in str(err.value)


def test_index_root_may_be_the_dev_data_folder(tree):
    index = index_dataset(tree / "dev_data")
    assert set(index.subset) == {"dev_data"} and set(index.machine) == {"fan", "valve"}


def test_index_applies_eval_ground_truth(tree):
    index = index_dataset(tree, ground_truth=tree / "ground_truth")
    test = index[(index.subset == "eval_data") & (index.split == "test")]
    labels = pd.read_csv(
        tree / "ground_truth" / "ground_truth_Vacuum_section_00_test.csv", header=None
    )
    domains = pd.read_csv(
        tree / "ground_truth" / "domain" / "ground_truth_Vacuum_section_00_test.csv", header=None
    )
    want_label = dict(zip(labels[0], labels[1].map({0: "normal", 1: "anomaly"}), strict=True))
    want_domain = dict(zip(domains[0], domains[1].map({0: "source", 1: "target"}), strict=True))
    assert len(test) == 8
    assert test.label.tolist() == [want_label[c] for c in test["clip"]]
    assert test.domain.tolist() == [want_domain[c] for c in test["clip"]]
    assert test.groupby(["domain", "label"]).size().eq(2).all()
    # Dev clips keep the labels from their names.
    dev = index[index.subset == "dev_data"]
    pd.testing.assert_frame_equal(dev.reset_index(drop=True), index_dataset(tree / "dev_data"))


def test_ground_truth_missing_clip_is_an_error(tree, tmp_path):
    gt = tmp_path / "gt"
    shutil.copytree(tree / "ground_truth", gt)
    csv = gt / "ground_truth_Vacuum_section_00_test.csv"
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(AsdError, match="missing from the ground truth"):
        index_dataset(tree, ground_truth=gt)
    with pytest.raises(AsdError, match="ground-truth folder not found"):
        index_dataset(tree, ground_truth=tmp_path / "nowhere")


# --------------------------------------------------------------------------- index errors


def _write(path: Path, samples: int = 400, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(samples, dtype=np.int16), rate, subtype="PCM_16")
    return path


TRAIN = "section_00_source_train_normal_0000_a_1.wav"
TEST = "section_00_source_test_normal_0000_a_1.wav"


def test_error_missing_root(tmp_path):
    with pytest.raises(AsdError, match="not found") as err:
        index_dataset(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(err.value)


def test_error_no_subset_folder(tmp_path):
    (tmp_path / "fan" / "train").mkdir(parents=True)
    with pytest.raises(AsdError, match="no dev_data/ or eval_data/") as err:
        index_dataset(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_error_machine_without_train_clips(tmp_path):
    _write(tmp_path / "dev_data/raw/fan/test" / TEST)
    (tmp_path / "dev_data/raw/fan/train").mkdir()
    with pytest.raises(AsdError, match="no training clips") as err:
        index_dataset(tmp_path)
    assert str(tmp_path / "dev_data/raw/fan/train") in str(err.value)


def test_error_empty_test_folder(tmp_path):
    _write(tmp_path / "dev_data/raw/fan/train" / TRAIN)
    (tmp_path / "dev_data/raw/fan/test").mkdir()
    with pytest.raises(AsdError, match="no clips in") as err:
        index_dataset(tmp_path)
    assert str(tmp_path / "dev_data/raw/fan/test") in str(err.value)


def test_error_unparseable_file_name(tmp_path):
    _write(tmp_path / "dev_data/raw/fan/train" / TRAIN)
    bad = _write(tmp_path / "dev_data/raw/fan/train/recording_1.wav")
    with pytest.raises(AsdError, match="outside the DCASE pattern") as err:
        index_dataset(tmp_path)
    assert str(bad) in str(err.value)


def test_train_only_machine_is_indexed(tmp_path):
    _write(tmp_path / "dev_data/raw/fan/train" / TRAIN)
    index = index_dataset(tmp_path)
    assert index.split.tolist() == ["train"] and index.attributes[0] == {"a": "1"}


# --------------------------------------------------------------------------- read_wav


def test_read_wav_mono_16k_roundtrip(tmp_path):
    x = (np.sin(np.arange(1600) / 5) * 10000).astype(np.int16)
    path = tmp_path / "a.wav"
    sf.write(str(path), x, 16000, subtype="PCM_16")
    y = read_wav(path, 16000)
    assert y.dtype == np.float32 and y.shape == (1600,)
    np.testing.assert_allclose(y, x / 32768.0, atol=1e-6)


def test_read_wav_stereo_mixes_down_with_channel_minus_one_and_warns_once(tmp_path, caplog):
    left = np.full(800, 0.5, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, -left * 0.5], axis=1), 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="asd.data.index"):
        y = read_wav(path, 16000, channel=-1)
        read_wav(path, 16000, channel=-1)
    np.testing.assert_allclose(y, 0.125, atol=1e-6)
    notes = [r for r in caplog.records if "mono" in r.getMessage()]
    assert len(notes) == 1 and str(path) in notes[0].getMessage()


def test_read_wav_multichannel_gives_the_chosen_channel_first_by_default(tmp_path, caplog):
    wave = np.stack([np.full(800, 0.1 * (c + 1), dtype=np.float32) for c in range(8)], axis=1)
    path = tmp_path / "array.wav"
    sf.write(str(path), wave, 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="asd.data.index"):
        first = read_wav(path, 16000)
    np.testing.assert_allclose(first, 0.1, atol=1e-6)
    np.testing.assert_allclose(read_wav(path, 16000, channel=7), 0.8, atol=1e-6)
    assert any("used channel 0 of 8" in r.getMessage() for r in caplog.records)
    with pytest.raises(AsdError, match="features.channel=8 but .*array.wav has 8 channels"):
        read_wav(path, 16000, channel=8)


def test_read_wav_resamples_and_warns_once(tmp_path, caplog):
    path = tmp_path / "8k.wav"
    sf.write(str(path), np.zeros(8000, dtype=np.float32), 8000, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="asd.data.index"):
        y = read_wav(path, 16000)
        read_wav(path, 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    assert len([r for r in caplog.records if "resampled" in r.getMessage()]) == 1


def test_read_wav_silence_is_valid(tmp_path):
    path = _write(tmp_path / "silent.wav")
    assert not read_wav(path, 16000).any()


def test_read_wav_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AsdError, match="cannot read") as err:
        read_wav(path, 16000)
    assert str(path) in str(err.value)


def test_read_wav_missing_file(tmp_path):
    with pytest.raises(AsdError, match="cannot read"):
        read_wav(tmp_path / "absent.wav", 16000)


def test_read_wav_zero_length(tmp_path):
    path = _write(tmp_path / "empty.wav", samples=0)
    with pytest.raises(AsdError, match="empty audio file") as err:
        read_wav(path, 16000)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    clip = _write(tmp_path / "dev_data/raw/fan/train" / TRAIN, samples=400)
    _write(tmp_path / "dev_data/raw/fan/test" / TEST)
    before = fingerprint(index_dataset(tmp_path))
    assert before == fingerprint(index_dataset(tmp_path))
    _write(clip, samples=500)
    after = fingerprint(index_dataset(tmp_path))
    assert after != before
    _write(tmp_path / "dev_data/raw/fan/test" / TEST.replace("0000", "0001"))
    assert fingerprint(index_dataset(tmp_path)) not in (before, after)
