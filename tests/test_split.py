"""The split manifest on rows alone: the rule, its reproducibility, and what reading checks."""

import json

import pytest

from asd.data.split import SPLIT_FILE, apply_split, read_split, save_split, split_manifest
from asd.errors import AsdError


def _rows(n_normal=6, n_anomaly=2, groups=("fan/id_00", "fan/id_02")):
    rows = []
    for group in groups:
        for label, n in (("normal", n_normal), ("anomaly", n_anomaly)):
            for i in range(n):
                key = f"{group}/{label}/{i:08d}.wav"
                rows.append({"key": key, "label": label, "path": f"/data/{key}", "split": None})
    return rows


def test_anomalies_go_to_test_and_as_many_normals_per_group():
    manifest = split_manifest(_rows(), "mimii", seed=0)
    clips = manifest["clips"]
    for group in ("fan/id_00", "fan/id_02"):
        mine = {k: v for k, v in clips.items() if k.startswith(group + "/")}
        assert all(v == "test" for k, v in mine.items() if "anomaly" in k)
        assert sum(v == "test" for k, v in mine.items() if "normal" in k) == 2
    assert (manifest["n_train"], manifest["n_test"]) == (8, 8)
    assert manifest["layout"] == "mimii" and manifest["format"] == 1


def test_the_same_seed_gives_the_same_split_another_seed_another():
    a, b = split_manifest(_rows(), "mimii", seed=3), split_manifest(_rows()[::-1], "mimii", seed=3)
    assert a == b  # row order does not matter
    assert split_manifest(_rows(n_normal=20), "mimii", seed=4)["clips"] != split_manifest(
        _rows(n_normal=20), "mimii", seed=5
    )["clips"]


@pytest.mark.parametrize("n_normal, fraction, n_test", [(10, 0.3, 3), (10, 0.01, 1), (2, 0.9, 1),
                                                         (1, 0.5, 0)])  # fmt: skip
def test_a_fraction_keeps_one_normal_on_each_side(n_normal, fraction, n_test):
    clips = split_manifest(_rows(n_normal, 0, ("fan/id_00",)), "mimii", 0, fraction)["clips"]
    assert sum(v == "test" for v in clips.values()) == n_test


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_a_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(AsdError, match="--test-fraction must be between 0 and 1"):
        split_manifest(_rows(), "mimii", 0, fraction)


def test_save_keeps_a_split_of_other_settings_unless_overwrite(tmp_path):
    path = save_split(tmp_path, split_manifest(_rows(), "mimii", seed=1))
    assert path == tmp_path / SPLIT_FILE and read_split(path)["seed"] == 1
    save_split(tmp_path, split_manifest(_rows(), "mimii", seed=1))  # same settings: fine
    with pytest.raises(AsdError, match="already holds a split with seed 1"):
        save_split(tmp_path, split_manifest(_rows(), "mimii", seed=2))
    save_split(tmp_path, split_manifest(_rows(), "mimii", seed=2), overwrite=True)
    assert read_split(path)["seed"] == 2


@pytest.mark.parametrize("text, message", [("{", "cannot read"), ('{"format": 9}', "not an asd"),
                                           ('{"format": 1}', "no 'clips'")])  # fmt: skip
def test_read_names_what_is_wrong_with_the_file(tmp_path, text, message):
    (tmp_path / SPLIT_FILE).write_text(text)
    with pytest.raises(AsdError, match=message):
        read_split(tmp_path / SPLIT_FILE)


def test_apply_gives_each_row_its_split_and_drops_the_key(tmp_path):
    rows = _rows()
    manifest = split_manifest(rows, "mimii", seed=0)
    save_split(tmp_path, manifest)
    done = apply_split([dict(r) for r in rows], tmp_path, "MIMII")
    assert all("key" not in r for r in done)
    assert [r["split"] for r in done] == [manifest["clips"][r["key"]] for r in rows]


def test_apply_refuses_a_missing_or_stale_manifest(tmp_path):
    with pytest.raises(AsdError, match="asd data split --data"):
        apply_split(_rows(), tmp_path, "MIMII")
    save_split(tmp_path, split_manifest(_rows(), "mimii"))
    with pytest.raises(AsdError, match="not in the split manifest"):
        apply_split(_rows(n_normal=7), tmp_path, "MIMII")
    with pytest.raises(AsdError, match="clips that are not in"):
        apply_split(_rows(n_normal=5), tmp_path, "MIMII")


def test_apply_refuses_an_anomaly_in_train(tmp_path):
    manifest = split_manifest(_rows(), "mimii")
    bad = next(k for k in manifest["clips"] if "anomaly" in k)
    manifest["clips"][bad] = "train"
    (tmp_path / SPLIT_FILE).write_text(json.dumps(manifest))
    with pytest.raises(AsdError, match="puts anomalous clip"):
        apply_split(_rows(), tmp_path, "MIMII")
