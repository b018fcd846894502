"""System metrics of a trial in its MLflow run (a real local SQLite store)."""

import time

import pytest

from asd.tracking.system import system_metrics


@pytest.fixture
def run(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("system")
    return uri, client, client.create_run(experiment).info.run_id


def _system_keys(client, run_id):
    return {k for k in client.get_run(run_id).data.metrics if k.startswith("system/")}


def test_samples_land_in_the_run_while_it_works(run):
    uri, client, run_id = run
    with system_metrics(uri, run_id, interval_s=0.5):
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            sum(i * i for i in range(10_000))  # keep a CPU busy
    keys = _system_keys(client, run_id)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys
    steps = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(steps) >= 2


def test_a_block_shorter_than_one_interval_still_gets_a_sample(run):
    uri, client, run_id = run
    with system_metrics(uri, run_id, interval_s=60):
        pass
    assert "system/cpu_utilization_percentage" in _system_keys(client, run_id)


@pytest.mark.parametrize("interval, run_id", [(0, None), (1, "pending-abc")])
def test_off_when_disabled_or_the_run_is_pending(run, interval, run_id):
    uri, client, real = run
    with system_metrics(uri, run_id or real, interval_s=interval):
        pass
    assert not _system_keys(client, real)
