"""The MLflow adapter against a local SQLite store: each operation, and each one replayed."""

import json
import uuid

import pandas as pd
import pytest
from mlflow import MlflowClient

from asd.errors import AsdError
from asd.tracking import default_tracking_uri
from asd.tracking.store import (
    ENCODER_DIR,
    ENCODER_FILE,
    KIND_TRAINING,
    TAG_KIND,
    TAG_LOGGED,
    TAG_PARENT,
    TAG_SWEEP,
    TAG_TRIAL,
    Store,
    param_value,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = default_tracking_uri(tmp_path_factory.mktemp("mlflow"))
    store = Store(uri)
    store.client.search_experiments()  # creates the database once: it is slow
    return store


def same(ref):
    return ref


def _sweep(store, sweep_id, ts=1000.0, params=None):
    args = {
        "experiment": "store",
        "sweep_id": sweep_id,
        "ref": "pending-s",
        "tags": {"asd.kind": "sweep"},
        "params": params or {},
    }
    return store.apply("start_sweep", args, ts, same)["run_id"]


def test_param_values_are_strings_or_json():
    assert param_value("0.1") == "0.1"
    assert [param_value(v) for v in (3, 0.5, True, [1, "a"], None)] == [
        "3",
        "0.5",
        "true",
        '[1, "a"]',
        "null",
    ]


def test_unknown_operations_are_refused(store):
    with pytest.raises(AsdError, match="unknown journal operation 'drop'"):
        store.apply("drop", {}, 0.0, same)


def test_an_experiment_opens_as_training_with_artifacts_beside_the_database(store):
    exp = store.client.get_experiment(store.experiment_id("store"))
    assert exp.tags[TAG_KIND] == KIND_TRAINING
    db = store.uri.removeprefix("sqlite:///")
    assert exp.artifact_location.endswith("/mlartifacts/store")
    assert exp.artifact_location.startswith("file://" + db.rpartition("/")[0])
    assert store.experiment_id("store") == exp.experiment_id  # found again, not created twice


def test_a_start_again_finds_the_run_by_its_tag_and_reopens_it(store):
    sweep_id = uuid.uuid4().hex
    run_id = _sweep(store, sweep_id, ts=1000.0, params={"a": "1"})
    store.apply("finish", {"run": run_id, "status": "FAILED", "end_time": 1_001_000}, 0.0, same)
    assert _sweep(store, sweep_id, ts=2000.0, params={"a": "1"}) == run_id  # a resume
    run = store.client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.start_time == 1_000_000
    assert run.data.tags[TAG_SWEEP] == sweep_id and run.data.params == {"a": "1"}


def test_trials_nest_under_their_parent_and_a_retry_reuses_the_child(store):
    parent = _sweep(store, uuid.uuid4().hex)
    args = {"parent": "pending-s", "trial_id": "t_1", "ref": "pending-t", "tags": {}, "params": {}}
    resolve = {"pending-s": parent}.__getitem__
    child = store.apply("start_trial", args, 1000.0, resolve)
    assert child == {"ref": "pending-t", "run_id": child["run_id"]}
    tags = store.client.get_run(child["run_id"]).data.tags
    assert (tags[TAG_PARENT], tags[TAG_TRIAL]) == (parent, "t_1")
    assert tags["mlflow.runName"] == "t_1"
    assert store.apply("start_trial", args, 2000.0, resolve)["run_id"] == child["run_id"]
    other = _sweep(store, uuid.uuid4().hex)  # the same trial id under another sweep is new
    assert store.apply("start_trial", {**args, "parent": other}, 0.0, same) != child


def test_metrics_keep_their_timestamps_and_a_replay_adds_no_point(store):
    run_id = _sweep(store, uuid.uuid4().hex)
    args = {"run": run_id, "metrics": [["loss", 0.5, 1111, 0], ["loss", 0.25, 2222, 1]]}
    store.apply("log_metrics", args, 0.0, same)
    store.apply("log_metrics", args, 0.0, same)
    history = store.client.get_metric_history(run_id, "loss")
    assert [(m.value, m.timestamp, m.step) for m in history] == [(0.5, 1111, 0), (0.25, 2222, 1)]


def test_params_cannot_change_and_tags_overwrite(store):
    run_id = _sweep(store, uuid.uuid4().hex)
    store.apply("log_params", {"run": run_id, "params": {"lr": "0.1"}}, 0.0, same)
    store.apply("log_params", {"run": run_id, "params": {"lr": "0.1"}}, 0.0, same)  # replay
    with pytest.raises(Exception, match="lr"):
        store.apply("log_params", {"run": run_id, "params": {"lr": "0.2"}}, 0.0, same)
    store.apply("set_tags", {"run": run_id, "tags": {"stage": "a"}}, 0.0, same)
    store.apply("set_tags", {"run": run_id, "tags": {"stage": "b"}}, 0.0, same)
    data = store.client.get_run(run_id).data
    assert data.params == {"lr": "0.1"} and data.tags["stage"] == "b"


def test_a_table_is_overwritten_and_listed_once(store, tmp_path):
    run_id = _sweep(store, uuid.uuid4().hex)
    path = tmp_path / "sections.json"
    frame = pd.DataFrame({"machine": ["fan"], "auc": [0.75]})
    path.write_text(frame.to_json(orient="split", index=False))
    args = {"run": run_id, "path": str(path), "artifact_file": "tables/sections.json"}
    store.apply("log_table", args, 0.0, same)
    store.apply("log_table", args, 0.0, same)  # a replay
    listed = json.loads(store.client.get_run(run_id).data.tags[TAG_LOGGED])
    assert listed == [{"path": "tables/sections.json", "type": "table"}]
    local = store.client.download_artifacts(run_id, "tables/sections.json", str(tmp_path / "d"))
    assert pd.read_json(local, orient="split").equals(frame)


def test_files_and_folders_land_at_their_artifact_paths(store, tmp_path):
    run_id = _sweep(store, uuid.uuid4().hex)
    (tmp_path / "notes.txt").write_text("WARNING asd: x\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "roc.png").write_bytes(b"png")
    store.apply(
        "log_artifact", {"run": run_id, "path": str(tmp_path / "notes.txt"), "artifact_path": None},
        0.0, same,
    )  # fmt: skip
    store.apply(
        "log_artifacts", {"run": run_id, "dir": str(tmp_path / "plots"), "artifact_path": "plots"},
        0.0, same,
    )  # fmt: skip
    paths = {a.path for a in store.client.list_artifacts(run_id)}
    assert paths == {"notes.txt", "plots"}
    assert [a.path for a in store.client.list_artifacts(run_id, "plots")] == ["plots/roc.png"]


def test_an_encoder_is_logged_once_as_a_ready_model_with_its_config(
    store, tiny_encoder_file, tmp_path
):
    from asd.tracking.model import sha256

    run_id = _sweep(store, uuid.uuid4().hex)
    path = tiny_encoder_file(tmp_path / "encoder.pt")
    args = {"run": run_id, "path": str(path), "name": "asd-encoder", "sha256": sha256(path)}
    args["ref"] = "pending-m"
    first = store.apply("log_encoder", args, 0.0, same)
    assert first["ref"] == "pending-m" and first["model_uri"].startswith("models:/")
    assert store.apply("log_encoder", args, 0.0, same) == first  # a replay finds it by hash
    model = store.client.get_logged_model(first["model_uri"].removeprefix("models:/"))
    assert model.source_run_id == run_id and model.params["features.n_mels"] == "16"
    files = [a.path for a in store.client.list_artifacts(run_id, ENCODER_DIR)]
    assert files == [f"{ENCODER_DIR}/{ENCODER_FILE}"]
    other = {**args, "sha256": "0" * 64}  # another encoder under the same name: logged anew
    assert store.apply("log_encoder", other, 0.0, same)["model_uri"] != first["model_uri"]
    assert MlflowClient(store.uri).get_run(run_id).outputs.model_outputs
