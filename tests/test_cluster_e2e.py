"""End to end with real servers: `ray start --head`, `mlflow server` on PostgreSQL, `ray job`.

Everything binds to 127.0.0.1 (PostgreSQL listens on a Unix socket). The assertions read back
from the MLflow server what a user would look at: the sweep's parent run, child runs with both
estimators' metrics (none lost while four trials wrote concurrently), and a registered model
version.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import BIN, free_port, mlflow_server, postgres_server, server_env

from asd.tracking.figures import is_headline

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PER_EPOCH = ("val_hmean", "train.loss", "train.lr", "time.train_s")


@pytest.fixture(scope="module")
def mlflow_on_postgres(tmp_path_factory):
    """The deployment users run: `mlflow server` on a real PostgreSQL, artifacts proxied."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with postgres_server(root) as database, mlflow_server(root, database) as uri:
        yield uri


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    dashboard = free_port()
    gcs = free_port()
    started = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(gcs),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--num-cpus",
            "4",  # logical CPUs: four one-CPU trials at once, even on a 2-core machine
            "--num-gpus",
            "0",
            "--disable-usage-stats",
        ],
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run(
            [str(BIN / "ray"), "stop", "--force"],
            env=server_env(),
            timeout=120,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def cluster_data(synth_tree):
    return synth_tree(
        machines=("fan", "gearbox", "valve"), train_source=12, test_per_domain=4, seed=7
    )


def _submit(address: str, job_args: list[str], timeout_s: int = 900) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head's job agent is still starting (a loaded box)."""
    cmd = [
        str(BIN / "ray"), "job", "submit", "--address", address,
        "--runtime-env", "jobs/runtime_env.yaml", "--", sys.executable, "jobs/sweep.py", *job_args,
    ]  # fmt: skip
    for _ in range(24):
        job = subprocess.run(
            cmd, cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=timeout_s
        )
        if "No available agent to submit job" not in job.stdout + job.stderr:
            return job
        time.sleep(5)
    return job


def test_job_fails_at_once_when_mlflow_is_unreachable(ray_cluster, cluster_data, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    job = _submit(
        ray_cluster,
        [
            "--data",
            str(cluster_data),
            "--tracking-uri",
            dead,
            "--workdir",
            str(tmp_path / "work"),
            "--name",
            "dead",
        ],
    )
    output = job.stdout + job.stderr
    assert job.returncode != 0, output
    assert f"asd: cannot reach MLflow at {dead}" in output
    assert not (tmp_path / "work" / "features").exists(), "refused before any feature work"
    assert time.monotonic() - start < 120


def test_sweep_submitted_as_a_ray_job_is_tracked_on_the_mlflow_server(
    ray_cluster, mlflow_on_postgres, cluster_data, shrunk_space, tmp_path
):
    space = shrunk_space("smoke", num_samples=4)  # the shipped space's keys, one-epoch sizes
    job = _submit(
        ray_cluster,
        [
            "--space",
            str(space),
            "--data",
            str(cluster_data),
            "--tracking-uri",
            mlflow_on_postgres,
            "--workdir",
            str(tmp_path / "work"),
            "--name",
            "e2e",
            "--num-samples",
            "4",
            "--max-concurrent",
            "4",
            "--holdout-machines",
            "valve",
            "--promote",
            "--system-metrics-interval",
            "1",
        ],
    )
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-5000:]
    assert "succeeded" in output.lower()
    assert "== sweep e2e: 4 trials" in output

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_on_postgres, registry_uri=mlflow_on_postgres)
    experiment = client.get_experiment_by_name("asd")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [
        r
        for r in runs
        if r.data.tags.get("asd.sweep_id") == "e2e" and "mlflow.parentRunId" not in r.data.tags
    ]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert len(children) == 4, "one child run per trial, none lost"

    summary_path = client.download_artifacts(parent.info.run_id, "summary.csv", str(tmp_path))
    import pandas as pd

    summary = pd.read_csv(summary_path)
    assert sorted(summary["trial_id"]) == sorted(c.data.tags["asd.trial_id"] for c in children)

    verified_metrics = 0
    for child in children:
        epochs = int(
            summary.loc[summary["trial_id"] == child.data.tags["asd.trial_id"], "epochs"].iloc[0]
        )
        for key in PER_EPOCH:
            history = client.get_metric_history(child.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), (
                f"{key} of trial {child.data.tags['asd.trial_id']}"
            )
            verified_metrics += len(history)
        if child.info.status == "FINISHED":
            for key in (
                "ml.hmean",
                "elliptic.hmean",
                "reference.ml.hmean",
                "vs_reference.elliptic.hmean",
            ):
                assert key in child.data.metrics
                verified_metrics += 1
    assert any(c.info.status == "FINISHED" for c in children)

    # Every figure a trial reported to Tune (its own storage) reached MLflow, at its epoch.
    sweep_dir = tmp_path / "work" / "ray_results" / "e2e"
    for child in children:
        trial_id = child.data.tags["asd.trial_id"]
        (folder,) = sweep_dir.glob(f"run_trial_{trial_id}_*")
        for line in (folder / "result.json").read_text().splitlines():
            reported = json.loads(line)
            for key, value in reported.items():
                if not is_headline(key) or not key.startswith(
                    ("val_hmean", "train.", "time.", "ml.", "elliptic.")
                ):
                    continue  # Tune's own bookkeeping, or a figure kept in the trial's tables
                history = client.get_metric_history(child.info.run_id, key)
                logged = [m.value for m in history if m.step == reported["epoch"]]
                assert logged == [pytest.approx(value)], (
                    f"{trial_id} {key} epoch {reported['epoch']}"
                )
                verified_metrics += 1

    # Trials really ran four at a time on PostgreSQL: some instant lies inside all four runs.
    spans = [(c.info.start_time, c.info.end_time or c.info.start_time) for c in children]
    most = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert most >= 4, spans

    # Provenance on the parent run: the space as written, the resolved base config, the data
    # fingerprint and the command line.
    prov = Path(client.download_artifacts(parent.info.run_id, "provenance", str(tmp_path)))
    assert (prov / "space.yaml").read_text() == space.read_text()
    from asd.sweep.space import load_space

    base = json.loads((prov / "base_config.json").read_text())
    assert base == json.loads(json.dumps(load_space(space).base.to_flat()))
    data = json.loads((prov / "data.json").read_text())
    assert data["fingerprint"] == parent.data.tags["asd.data_fingerprint"]
    assert data["holdout_machines"] == ["valve"]
    command = (prov / "command.txt").read_text()
    assert command.startswith("asd sweep ") and "--name e2e" in command
    assert parent.data.tags["asd.command"] == command.strip()

    # System metrics per trial: CPU and memory sampled while it trained (GPU where there is one).
    for child in children:
        run = client.get_run(child.info.run_id)
        sampled = {k for k in run.data.metrics if k.startswith("system/")}
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= (
            sampled
        ), (child.data.tags["asd.trial_id"], sorted(sampled))

    version = client.get_model_version_by_alias("asd-encoder", "champion")
    assert version.tags["sweep_id"] == "e2e"
    assert parent.data.tags["asd.model_version"] == str(version.version)
    print(json.dumps({"runs": 1 + len(children), "metrics_verified": verified_metrics}))
