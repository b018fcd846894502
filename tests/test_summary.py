"""asd.sweep.summary: retiring child runs of trials Tune never recorded (a killed driver)."""

import pandas as pd
from mlflow import MlflowClient

from asd.sweep.summary import close_lost_trials


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
