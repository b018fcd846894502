"""Checks before a sweep starts (asd/sweep/checks.py): each refusal names its flag or file."""

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from asd.errors import AsdError
from asd.sweep.checks import (
    check_name,
    check_resources,
    check_same_space,
    check_settings,
    machine_groups,
    record_path,
    remember_space,
    space_digest,
    workers_per_trial,
)
from asd.sweep.settings import SweepSettings

BASE = SweepSettings(space=Path("s.yaml"), cpus_per_trial=1.0, gpus_per_trial=0.0)


def test_sound_settings_pass():
    check_settings(BASE)
    check_settings(replace(BASE, num_samples=1, max_concurrent_trials=1, validate_every=0))


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("num_samples", 0, "--num-samples 0"),
        ("max_concurrent_trials", 0, "--max-concurrent 0"),
        ("cpus_per_trial", 0.0, "--cpus-per-trial 0.0"),
        ("gpus_per_trial", -1.0, "--gpus-per-trial -1.0"),
        ("max_failures", -1, "--max-failures -1"),
        ("validate_every", -2, "--validate-every -2"),
        ("checkpoint_every", -1, "--checkpoint-every -1"),
    ],
)
def test_a_bad_count_names_its_flag(field, value, flag):
    with pytest.raises(AsdError, match=f"^{flag}: must be"):
        check_settings(replace(BASE, **{field: value}))


@pytest.mark.parametrize("name", ["tiny", "a.b_c-1", "X" * 128])
def test_good_names_pass(name):
    check_name(name)


@pytest.mark.parametrize("name", ["", "../up", "a/b", "a..b", "-lead", "sp ace", "X" * 129])
def test_names_that_could_escape_a_folder_are_refused(name):
    with pytest.raises(AsdError, match="--name"):
        check_name(name)
    with pytest.raises(AsdError, match="--name"):
        check_settings(replace(BASE, name=name))


def test_a_bad_tracking_uri_is_refused_before_anything_runs():
    with pytest.raises(AsdError):
        check_settings(replace(BASE, tracking_uri="ftp://nowhere"))


def test_resume_refuses_another_space_and_names_both_files(tmp_path):
    space, other = tmp_path / "a.yaml", tmp_path / "b.yaml"
    space.write_text("params: {}\n")
    other.write_text("params: {x: 1}\n")
    storage = tmp_path / "storage"
    remember_space(storage, "s", space)
    record = json.loads(record_path(storage, "s").read_text())
    assert record == {"space": str(space.resolve()), "sha256": space_digest(space)}
    check_same_space(storage, "s", space)  # same bytes: fine
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(space.read_bytes())
    check_same_space(storage, "s", copy)  # same bytes elsewhere: the content decides
    with pytest.raises(AsdError, match=f"started with search space {space.resolve()}") as err:
        check_same_space(storage, "s", other)
    assert f"--space {other}" in str(err.value)
    space.write_text("params: {edited: 1}\n")  # edited in place: other content
    with pytest.raises(AsdError, match="differs"):
        check_same_space(storage, "s", space)


def test_a_missing_record_warns_and_a_broken_one_is_refused(tmp_path, caplog):
    space = tmp_path / "a.yaml"
    space.write_text("x: 1\n")
    check_same_space(tmp_path, "none", space)
    assert "cannot check its search space" in caplog.text
    record_path(tmp_path, "bad").write_text("{not json")
    with pytest.raises(AsdError, match="bad.space.json"):
        check_same_space(tmp_path, "bad", space)
    with pytest.raises(AsdError, match="cannot read search space"):
        space_digest(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "gpus, workers, expect",
    [(0.0, None, 1), (0.5, None, 1), (1.0, None, 1), (2.0, None, 2), (4.0, 4, 4), (0.0, 3, 3)],
)
def test_workers_default_to_one_per_gpu(gpus, workers, expect):
    assert workers_per_trial(replace(BASE, gpus_per_trial=gpus, workers_per_trial=workers)) == (
        expect
    )


@pytest.mark.parametrize(
    "gpus, workers, message",
    [
        (1.5, None, "above 1 it must be whole"),
        (2.0, 3, "each worker holds one GPU"),
        (0.0, -1, "--workers-per-trial must be >= 0"),
    ],
)
def test_impossible_worker_counts_are_refused(gpus, workers, message):
    with pytest.raises(AsdError, match=message):
        workers_per_trial(replace(BASE, gpus_per_trial=gpus, workers_per_trial=workers))


def _index(*machines):
    return pd.DataFrame({"machine": list(machines)})


def test_machine_groups_split_tuned_from_held_out():
    index = _index("fan", "valve", "fan", "slider")
    assert machine_groups(index, BASE) == (("fan", "slider", "valve"), ())
    held = replace(BASE, holdout_machines=("valve",))
    assert machine_groups(index, held) == (("fan", "slider"), ("valve",))
    chosen = replace(held, tune_machines=("fan",))
    assert machine_groups(index, chosen) == (("fan",), ("valve",))


@pytest.mark.parametrize(
    "tune, holdout, message",
    [
        (None, ("pump",), r"'pump' is not in the data \(found: fan, valve\)"),
        (("fan",), ("fan",), "both tuned and held out: fan"),
        (None, ("fan", "valve"), "no machine types left to tune"),
    ],
)
def test_machine_groups_refuse_what_cannot_be_split(tune, holdout, message):
    settings = replace(BASE, tune_machines=tune, holdout_machines=holdout)
    with pytest.raises(AsdError, match=message):
        machine_groups(_index("fan", "valve"), settings)


@pytest.fixture(scope="module")
def two_cpu_ray():
    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_trials_no_node_can_hold_are_refused_with_the_cluster_size(two_cpu_ray):
    check_resources(replace(BASE, cpus_per_trial=2.0), workers=1)
    check_resources(replace(BASE, cpus_per_trial=1.0), workers=2)  # two 1-CPU bundles fit
    for settings, workers in [
        (replace(BASE, cpus_per_trial=3.0), 1),
        (replace(BASE, gpus_per_trial=1.0), 1),
        (replace(BASE, cpus_per_trial=1.0), 3),
    ]:
        with pytest.raises(AsdError, match="it has 2 CPUs and 0 GPUs in 1 node") as err:
            check_resources(settings, workers)
        assert "wait forever" in str(err.value)
        assert ("3 workers per trial" in str(err.value)) == (workers == 3)
