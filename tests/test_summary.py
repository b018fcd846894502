"""asd.sweep.summary: retiring child runs a killed or stopped sweep driver left RUNNING."""

import pandas as pd
from mlflow import MlflowClient

from asd.sweep.summary import close_lost_trials, close_running_children


def test_a_running_child_run_tune_never_recorded_is_killed_and_deleted(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("asd", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(experiment).info.run_id
    runs = {}
    for trial in ("kept", "lost", "done"):
        tags = {"mlflow.parentRunId": parent, "asd.trial_id": trial}
        runs[trial] = client.create_run(experiment, tags=tags).info.run_id
    client.set_terminated(runs["done"], status="FINISHED")
    summary = pd.DataFrame({"trial_id": ["kept"]})  # "done" finished in an older Tune state

    assert close_lost_trials(uri, parent, summary) == [runs["lost"]]
    lost = client.get_run(runs["lost"])
    assert (lost.info.status, lost.info.lifecycle_stage) == ("KILLED", "deleted")
    assert lost.data.tags["asd.status"] == "lost_with_the_driver"
    for trial in ("kept", "done"):
        assert client.get_run(runs[trial]).info.lifecycle_stage == "active"
    assert client.get_run(runs["kept"]).info.status == "RUNNING"
    assert close_lost_trials(uri, "pending-0123", summary) == []


def test_a_lost_trial_closed_when_the_sweep_resumed_is_still_retired(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("asd", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(experiment).info.run_id
    runs = {
        trial: client.create_run(
            experiment, tags={"mlflow.parentRunId": parent, "asd.trial_id": trial}
        ).info.run_id
        for trial in ("resumed", "lost")
    }
    close_running_children(uri, parent, "left RUNNING")  # at the start of --resume
    client.update_run(runs["resumed"], status="RUNNING")  # Tune resumed this one
    summary = pd.DataFrame({"trial_id": ["resumed"]})
    assert close_lost_trials(uri, parent, summary) == [runs["lost"]]
    assert client.get_run(runs["lost"]).info.lifecycle_stage == "deleted"
    assert client.get_run(runs["resumed"]).info.lifecycle_stage == "active"


def test_children_left_running_by_a_stopped_driver_are_closed_killed_with_a_note(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("asd", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(experiment).info.run_id
    other = client.create_run(experiment).info.run_id
    runs = {
        name: client.create_run(experiment, tags={"mlflow.parentRunId": owner}).info.run_id
        for name, owner in (("running", parent), ("done", parent), ("elsewhere", other))
    }
    client.set_terminated(runs["done"], status="FINISHED")

    assert close_running_children(uri, parent, "stopped by SIGTERM") == [runs["running"]]
    closed = client.get_run(runs["running"])
    assert closed.info.status == "KILLED" and closed.info.lifecycle_stage == "active"
    assert closed.data.tags["asd.note"] == "stopped by SIGTERM"
    assert closed.data.tags["asd.status"] == "killed_with_the_driver"
    assert client.get_run(runs["done"]).info.status == "FINISHED"
    assert client.get_run(runs["elsewhere"]).info.status == "RUNNING"  # another sweep's
    assert close_running_children(uri, "pending-0123", "x") == []
