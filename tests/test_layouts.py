"""Layouts users have (DCASE 2020-2024, MIMII, ToyADMOS): detection, the index, the split, scores.

Each test builds a tiny tree with soundfile (0.25 s clips at 16 kHz; MIMII-like clips have 8
channels) in the layout's own folder and file names.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd.cli.main import main
from asd.config import Config
from asd.data.index import COLUMNS, fingerprint, read_wav
from asd.data.layouts import (
    LAYOUTS,
    check_unique_names,
    detect_layout,
    index_data,
    make_split,
    write_split,
)
from asd.data.split import SPLIT_FILE
from asd.detect.metrics import machine_table, section_scores, summarize
from asd.errors import AsdError

pytestmark = pytest.mark.usefixtures("cli_environment")  # it runs `asd` in-process

SR = 16000
MIMII_SAMPLE = Path("/work/shared/data/mimii-fan-sample")


def _wav(path: Path, channels: int = 1, seed: int = 0, seconds: float = 0.25) -> Path:
    """A short noise clip; channel c of a multi-channel clip is scaled by (c + 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).normal(0, 0.05, int(SR * seconds)).astype(np.float32)
    wave = noise if channels == 1 else np.stack([noise * (c + 1) for c in range(channels)], 1)
    sf.write(str(path), wave, SR, subtype="PCM_16")
    return path


def _dcase2020(root: Path) -> Path:
    """dev_data/<machine>/{train,test}/ with names repeated between train and test."""
    for machine, ids in (("fan", (0, 2)), ("ToyConveyor", (1,))):
        for mid in ids:
            for i in range(3):
                _wav(root / "dev_data" / machine / "train" / f"normal_id_{mid:02d}_{i:08d}.wav")
            for label in ("normal", "anomaly"):
                for i in range(2):
                    name = f"{label}_id_{mid:02d}_{i:08d}.wav"
                    _wav(root / "dev_data" / machine / "test" / name, seed=i + 7)
    _wav(root / "eval_data" / "fan" / "train" / "normal_id_01_00000000.wav")
    _wav(root / "eval_data" / "fan" / "test" / "id_01_00000000.wav")
    return root


def _dcase2021(root: Path) -> Path:
    """train/ plus source_test/ and target_test/ per machine; an eval test name too."""
    base = root / "dev_data" / "pump"
    for dom in ("source", "target"):
        _wav(base / "train" / f"section_00_{dom}_train_normal_0000_strength_1_ambient.wav")
        for label in ("normal", "anomaly"):
            _wav(base / f"{dom}_test" / f"section_00_{dom}_test_{label}_0000.wav")
    _wav(root / "eval_data" / "pump" / "train" / "section_03_source_train_normal_0000.wav")
    _wav(root / "eval_data" / "pump" / "source_test" / "section_03_source_test_0000.wav")
    return root


def _sections(root: Path, sections: tuple[int, ...], attrs: str = "vel_6") -> Path:
    """DCASE 2022-2024 names: section_NN_<domain>_<split>_<label>_NNNN_<attributes>.wav."""
    base = root / "dev_data" / "raw" / "fan"
    for sec in sections:
        for dom in ("source", "target"):
            _wav(base / "train" / f"section_{sec:02d}_{dom}_train_normal_0000_{attrs}.wav")
            for label in ("normal", "anomaly"):
                _wav(base / "test" / f"section_{sec:02d}_{dom}_test_{label}_0000_{attrs}.wav")
    return root


def _mimii(root: Path, snrs: tuple[str, ...] = ("-6", "6"), n_normal: int = 6) -> Path:
    """<snr>_dB_<machine>/<machine>/id_NN/{normal,abnormal}/NNNNNNNN.wav, 8 channels."""
    for snr in snrs:
        for mid in (0, 2):
            base = root / f"{snr}_dB_fan" / "fan" / f"id_{mid:02d}"
            for i in range(n_normal):
                _wav(base / "normal" / f"{i:08d}.wav", channels=8, seed=i)
            for i in range(2):
                _wav(base / "abnormal" / f"{i:08d}.wav", channels=8, seed=100 + i)
    return root


def _toyadmos(root: Path) -> Path:
    """<machine>/caseN/{NormalSound_IND,AnomalousSound_IND}/ with one file per microphone."""
    for case in (1, 2):
        base = root / "ToyCar" / f"case{case}"
        for i in range(1, 5):
            for ch in (1, 2):
                _wav(
                    base
                    / "NormalSound_IND"
                    / f"11000{i}_ToyCar_case{case}_normal_IND_ch{ch}_{i:04d}.wav"
                )
        for ch in (1, 2):
            _wav(
                base / "AnomalousSound_IND" / f"11010001_ToyCar_case{case}_ab01_IND_ch{ch}_0001.wav"
            )
        _wav(base / "NormalSound_CNT" / f"1100_ToyCar_case{case}_normal_CNT_ch1_0001.wav")
    return root


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (_dcase2020, "dcase2020"),
        (_dcase2021, "dcase2021"),
        (lambda r: _sections(r, (0, 1, 2)), "dcase2022"),
        (lambda r: _sections(r, (0,), "car_A1_spd_28V"), "dcase2023"),
        (lambda r: _sections(r, (0,), "noAttribute"), "dcase2024"),
        (_mimii, "mimii"),
        (_toyadmos, "toyadmos"),
    ],
)
def test_each_layout_is_detected(tmp_path, build, name):
    assert detect_layout(build(tmp_path)) == LAYOUTS[name]


def test_an_unknown_tree_is_refused_with_the_layouts_expected(tmp_path):
    _wav(tmp_path / "misc" / "a.wav")
    with pytest.raises(AsdError, match=r"no known data layout in .*MIMII"):
        detect_layout(tmp_path)


# --------------------------------------------------------------------------- DCASE


def test_dcase2020_index_sections_are_machine_ids_one_domain(tmp_path):
    index = index_data(_dcase2020(tmp_path))
    assert list(index.columns) == COLUMNS
    dev = index[index["subset"] == "dev_data"]
    assert sorted(set(zip(dev["machine"], dev["section"], strict=True))) == [
        ("ToyConveyor", 1), ("fan", 0), ("fan", 2),
    ]  # fmt: skip
    assert set(index["domain"]) == {"source"}
    fan0 = dev[(dev["machine"] == "fan") & (dev["section"] == 0)]
    counts = fan0.groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", "normal"): 3, ("test", "normal"): 2, ("test", "anomaly"): 2}
    # The same file name in train and test is the real layout, not a duplicate.
    both = set(fan0.loc[fan0["split"] == "train", "clip"]) & set(
        fan0["clip"][fan0["split"] == "test"]
    )
    assert both == {"normal_id_00_00000000.wav", "normal_id_00_00000001.wav"}
    eval_test = index[(index["subset"] == "eval_data") & (index["split"] == "test")]
    assert eval_test[["section", "label"]].values.tolist() == [[1, "unknown"]]


def test_same_name_guard_keys_on_split_only_in_dcase2020():
    index = pd.DataFrame(
        {
            "subset": "dev_data", "machine": "fan", "split": ["train", "test"],
            "clip": "normal_id_00_00000000.wav",
            "path": ["/d/fan/train/x.wav", "/d/fan/test/x.wav"],
        }
    )  # fmt: skip
    check_unique_names(index, LAYOUTS["dcase2020"])
    with pytest.raises(AsdError, match="appears twice"):
        check_unique_names(index, LAYOUTS["dcase2023"])
    with pytest.raises(AsdError, match="appears twice"):
        check_unique_names(index.assign(split="test"), LAYOUTS["dcase2020"])


def test_dcase2023_tree_still_refuses_a_clip_in_both_splits(tmp_path):
    root = _sections(tmp_path, (0,), "car_A1")
    name = "section_00_source_train_normal_0000_car_A1.wav"
    shutil.copy(root / "dev_data/raw/fan/train" / name, root / "dev_data/raw/fan/test" / name)
    with pytest.raises(AsdError, match="is in both"):
        index_data(root)


def test_dcase2021_domains_come_from_the_test_folders(tmp_path):
    index = index_data(_dcase2021(tmp_path))
    test = index[(index["split"] == "test") & (index["subset"] == "dev_data")]
    assert sorted(zip(test["domain"], test["label"], strict=True)) == [
        ("source", "anomaly"), ("source", "normal"), ("target", "anomaly"), ("target", "normal"),
    ]  # fmt: skip
    train = index[index["split"] == "train"].iloc[0]
    assert train["attributes"] == {"strength": "1", "ambient": ""}
    eval_test = index[(index["subset"] == "eval_data") & (index["split"] == "test")].iloc[0]
    assert (eval_test["section"], eval_test["domain"], eval_test["label"]) == (
        3,
        "source",
        "unknown",
    )


def test_dcase2021_clip_in_the_wrong_domain_folder_is_refused(tmp_path):
    root = _dcase2021(tmp_path)
    _wav(root / "dev_data/pump/target_test/section_00_source_test_normal_0001.wav")
    with pytest.raises(AsdError, match="source test clip in folder target_test"):
        index_data(root)


def test_dcase2022_reads_several_sections(tmp_path):
    index = index_data(_sections(tmp_path, (0, 1, 2)))
    assert sorted(set(index["section"])) == [0, 1, 2]
    assert set(index["domain"]) == {"source", "target"}


def test_dcase2024_attribute_csv_fills_names_without_attributes(tmp_path):
    root = _sections(tmp_path, (0,), "noAttribute")
    base = root / "dev_data/raw/fan"
    names = sorted(p.name for p in base.rglob("*.wav"))
    rows = [f"fan/{'train' if '_train_' in n else 'test'}/{n},vel,6,loc,A\n" for n in names]
    (base / "attributes_00.csv").write_text("file_name,d1p,d1v,d2p,d2v\n" + "".join(rows))
    index = index_data(root)
    assert all(a == {"vel": "6", "loc": "A"} for a in index["attributes"])


# --------------------------------------------------------------------------- MIMII and the split


def test_mimii_needs_a_split_first_and_says_how(tmp_path):
    with pytest.raises(AsdError, match=r"without a train/test split: run `asd data split"):
        index_data(_mimii(tmp_path))


def test_mimii_index_after_split_each_noise_level_its_own_machine(tmp_path):
    root = _mimii(tmp_path)
    write_split(root, seed=1, test_fraction=0.5)
    index = index_data(root)
    assert list(index.columns) == COLUMNS
    assert sorted(set(index["machine"])) == ["fan_-6dB", "fan_6dB"]
    assert sorted(set(index["section"])) == [0, 2] and set(index["domain"]) == {"source"}
    assert index["clip"].str.match(r"^(normal|anomaly)_id_0[02]_\d{8}\.wav$").all()
    part = index[(index["machine"] == "fan_6dB") & (index["section"] == 0)]
    assert part.groupby(["split", "label"]).size().to_dict() == {
        ("test", "anomaly"): 2, ("test", "normal"): 3, ("train", "normal"): 3,
    }  # fmt: skip
    # 8 channels: features.channel=0 (the default) reads the first microphone.
    path = part["path"].iloc[0]
    raw, _ = sf.read(path, always_2d=True)
    assert raw.shape[1] == 8
    np.testing.assert_allclose(read_wav(path, SR), raw[:, 0], atol=1e-6)


def test_split_is_reproducible_normals_only_in_train_and_levels_agree(tmp_path):
    root = _mimii(tmp_path, n_normal=10)
    first, again = make_split(root, seed=5), make_split(root, seed=5)
    assert first == again and first["seed"] == 5
    other = make_split(root, seed=6)
    assert other["clips"] != first["clips"]
    for manifest in (first, other):
        clips = manifest["clips"]
        assert all(v == "test" for k, v in clips.items() if "/abnormal/" in k)
        # default rule: as many test normals as anomalies (2) per machine id
        for mid in ("id_00", "id_02"):
            normal_test = [k for k, v in clips.items() if f"/{mid}/normal/" in k and v == "test"]
            assert len(normal_test) == 2
    write_split(root, seed=5)
    index = index_data(root)
    assert set(index.loc[index["split"] == "train", "label"]) == {"normal"}
    # Keys leave out the noise level: a recording is in the same split at every level.
    index["key"] = index["path"].map(lambda p: "/".join(Path(p).parts[-3:]))
    assert (index.groupby("key")["split"].nunique() == 1).all()


def test_split_test_fraction_and_bad_fraction(tmp_path):
    root = _mimii(tmp_path, snrs=("0",), n_normal=10)
    clips = make_split(root, seed=0, test_fraction=0.3)["clips"]
    assert sum(v == "test" for k, v in clips.items() if "id_00/normal" in k) == 3
    with pytest.raises(AsdError, match="between 0 and 1"):
        make_split(root, test_fraction=1.0)


def test_split_manifest_is_written_once_and_refused_when_stale(tmp_path):
    root = _mimii(tmp_path, snrs=("0",))
    path, manifest = write_split(root, seed=2)
    assert path == root / SPLIT_FILE and json.loads(path.read_text()) == manifest
    write_split(root, seed=2)  # same settings: fine
    with pytest.raises(AsdError, match="seed 2 .*--overwrite"):
        write_split(root, seed=3)
    _wav(root / "0_dB_fan/fan/id_00/normal/00000099.wav", channels=8)
    with pytest.raises(AsdError, match="1 clips are not in the split manifest"):
        index_data(root)
    write_split(root, seed=3, overwrite=True)
    (root / "0_dB_fan/fan/id_00/normal/00000099.wav").unlink()
    with pytest.raises(AsdError, match="lists 1 clips that are not in"):
        index_data(root)


def test_a_new_split_of_the_same_files_is_other_data(tmp_path):
    root = _mimii(tmp_path, snrs=("0",), n_normal=10)
    write_split(root, seed=0)
    before = fingerprint(index_data(root))
    write_split(root, seed=1, overwrite=True)
    assert fingerprint(index_data(root)) != before


def test_split_refuses_a_set_that_has_one(tmp_path):
    with pytest.raises(AsdError, match="has its own train/test split"):
        make_split(_dcase2020(tmp_path))


def test_toyadmos_reads_channel_1_individual_clips_by_case(tmp_path):
    root = _toyadmos(tmp_path)
    write_split(root, seed=0, test_fraction=0.5)
    index = index_data(root)
    assert set(index["machine"]) == {"ToyCar"} and sorted(set(index["section"])) == [1, 2]
    assert index["clip"].str.contains("_ch1_").all() and not index["clip"].str.contains("CNT").any()
    case1 = index[index["section"] == 1].groupby(["split", "label"]).size().to_dict()
    assert case1 == {("test", "anomaly"): 1, ("test", "normal"): 2, ("train", "normal"): 2}


@pytest.mark.skipif(not MIMII_SAMPLE.is_dir(), reason="the real MIMII sample is not here")
def test_the_real_mimii_sample_is_read(tmp_path):
    root = tmp_path / "mimii"
    shutil.copytree(MIMII_SAMPLE / "fan", root / "fan", symlinks=False, copy_function=os.symlink)
    assert detect_layout(root).name == "mimii"
    write_split(root, seed=0, test_fraction=0.5)
    index = index_data(root)
    assert len(index) == 12 and set(index["machine"]) == {"fan"}
    assert index.groupby(["split", "label"]).size().to_dict() == {
        ("test", "anomaly"): 6, ("test", "normal"): 3, ("train", "normal"): 3,
    }  # fmt: skip
    info = sf.info(index["path"].iloc[0])
    assert (info.channels, info.samplerate) == (8, 16000)
    assert read_wav(index["path"].iloc[0], 16000).shape == (info.frames,)


# --------------------------------------------------------------------------- scores


def _results(index: pd.DataFrame, scores: dict[str, float]) -> pd.DataFrame:
    test = index[index["split"] == "test"].copy()
    test["anomaly_score"] = [scores[Path(p).name] for p in test["path"]]
    return test


def _hand_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Share of (normal, anomaly) pairs the anomaly outscores, ties counting half."""
    pairs = [(a > n) + 0.5 * (a == n) for n in s[y == 0] for a in s[y == 1]]
    return float(np.mean(pairs))


def test_one_domain_scores_match_a_hand_computed_auc(tmp_path):
    index = index_data(_dcase2020(tmp_path))
    index = index[(index["subset"] == "dev_data") & (index["machine"] == "fan")]
    scores = {  # section 0: one anomaly below a normal; section 2: separated
        "normal_id_00_00000000.wav": 0.2, "normal_id_00_00000001.wav": 0.6,
        "anomaly_id_00_00000000.wav": 0.5, "anomaly_id_00_00000001.wav": 0.9,
        "normal_id_02_00000000.wav": 0.1, "normal_id_02_00000001.wav": 0.2,
        "anomaly_id_02_00000000.wav": 0.3, "anomaly_id_02_00000001.wav": 0.4,
    }  # fmt: skip
    results = _results(index, scores)
    table = section_scores(results).set_index("section")
    for section, expected in ((0, 0.75), (2, 1.0)):
        part = results[results["section"] == section]
        y = (part["label"] == "anomaly").to_numpy().astype(int)
        assert _hand_auc(y, part["anomaly_score"].to_numpy()) == expected
        assert table.loc[section, "auc_source"] == pytest.approx(expected)
    assert table["auc_target"].isna().all()
    summary = summarize(table.reset_index())
    auc, pauc = table["auc_source"].to_numpy(), table["pauc"].to_numpy()
    values = np.concatenate([auc, pauc])
    assert summary["domains"] == 1
    assert summary["hmean"] == pytest.approx(len(values) / np.sum(1 / values))
    assert summary["dcase2020_auc"] == pytest.approx(0.875)
    assert summary["dcase2020"] == pytest.approx((auc.mean() + pauc.mean()) / 2)
    assert "auc_target" not in summary
    machines = machine_table(results)
    assert np.isnan(machines["auc_target"].iloc[0]) and machines["hmean"].iloc[0] > 0


def test_one_domain_and_two_domain_sections_are_not_scored_together():
    rows = []
    for machine, domains in (("a", ("source",)), ("b", ("source", "target"))):
        for dom in domains:
            for label, score in (("normal", 0.1), ("anomaly", 0.9), ("normal", 0.2)):
                rows.append((machine, 0, dom, label, score))
    results = pd.DataFrame(rows, columns=["machine", "section", "domain", "label", "anomaly_score"])
    with pytest.raises(AsdError, match="machine a|a section 00: no target-domain clips"):
        summarize(section_scores(results))


def test_two_domain_summary_is_unchanged_by_the_one_domain_path():
    rows = [("m", 0, d, lab, s) for d in ("source", "target")
            for lab, s in (("normal", 0.1), ("anomaly", 0.9))]  # fmt: skip
    results = pd.DataFrame(rows, columns=["machine", "section", "domain", "label", "anomaly_score"])
    summary = summarize(section_scores(results))
    assert set(summary) == {"hmean", "auc_source", "auc_target", "pauc", "n_sections"}


def test_features_channel_must_be_a_channel_or_minus_one():
    assert Config().features.channel == 0
    assert Config().with_overrides({"features.channel": -1}).features.channel == -1
    with pytest.raises(AsdError, match="features.channel"):
        Config().with_overrides({"features.channel": -2})


# --------------------------------------------------------------------------- the CLI


def test_cli_index_reports_the_layout(tmp_path, capsys):
    assert main(["data", "index", "--data", str(_dcase2020(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "layout: DCASE 2020 Task 2 (dcase2020)" in out and "not the DCASE 2023" in out


def test_cli_split_then_evaluate_a_mimii_tree(tmp_path, capsys):
    root = _mimii(tmp_path / "data", snrs=("6",))
    assert main(["data", "split", "--data", str(root), "--seed", "0"]) == 0
    assert "manifest written to" in capsys.readouterr().out
    argv = ["evaluate", "--data", str(root), "--embedding", "mean-logmel", "--quiet",
            "--estimator", "ml", "--workdir", str(tmp_path / "work")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "NOT the DCASE 2023 official score" in out
    assert "DCASE 2020 official figures: AUC" in out and "fan_6dB" in out
