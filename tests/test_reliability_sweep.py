"""Faults during a sweep, injected with `--epoch-hook` (tests/faults.py): nothing finished is lost.

One sweep carries several faults at once (a trial that raises once, one that always raises,
one whose worker is SIGKILLed after its first checkpoint, trials whose loss becomes NaN); a
second sweep loses its MLflow server mid-run and is replayed with `asd sync`. A killed sweep
driver is covered by tests/test_sweep.py, an MLflow server down at start by
tests/test_reliability_input.py (and tests/test_cluster_e2e.py for `ray job submit`).
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import free_port, start_mlflow, stop

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cli_environment")]  # `asd` in-process

TESTS = Path(__file__).resolve().parent
NAN_LR = 1.0e30  # Adam with this rate overflows the weights in the first epoch: loss NaN


@pytest.fixture(scope="module")
def faults_root(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def ray_with_faults_on_path(faults_root):
    """Ray workers import the hooks: start (or restart) Ray with tests/ on PYTHONPATH."""
    import ray

    ray.shutdown()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASD_FAULTS_DIR", str(faults_root))
        mp.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        )
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(synth_tree):
    return synth_tree(train_source=8, seed=5)


@pytest.fixture(scope="module")
def space(tiny_space):
    """``space(folder, lrs, n, fixed=None)``: the tiny space, ``train.lr`` among ``lrs``."""

    def write(folder, lrs, n, fixed=None):
        params = {"loss.temperature": "{loguniform: [0.05, 0.5]}", "train.lr": f"{{choice: {lrs}}}"}
        return tiny_space(folder / "space.yaml", params, num_samples=n, fixed=fixed)

    return write


def _faults_dir():
    return Path(os.environ["ASD_FAULTS_DIR"])  # one per module: the sweeps use distinct files


def _children(uri, sweep_id):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("asd")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("asd.sweep_id") == sweep_id
                 and "mlflow.parentRunId" not in r.data.tags]  # fmt: skip
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, {c.data.tags["asd.trial_id"]: c for c in children}


# --------------------------------------------------------------------------- trial faults


@pytest.fixture(scope="module")
def faulty_sweep(ray_with_faults_on_path, data, space, tmp_path_factory):
    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings
    from asd.tracking import default_tracking_uri

    tmp = tmp_path_factory.mktemp("faulty")
    workdir = tmp / "work"
    faults = _faults_dir()
    (faults / "roles").write_text("kill_once\nraise_once\nalways_raise\n")
    settings = SweepSettings(
        # The faults act on trials, not on the network: a width-8 ResNet fails as a 64 would.
        space=space(tmp, [NAN_LR, 1.0e-3, 2.0e-3, 3.0e-3], 6, fixed={"encoder.width": 8}),
        data=data,
        workdir=workdir,
        name="faulty",
        max_failures=1,
        epoch_hook="faults:by_role",
        device="cpu",
        checkpoint_every=1,  # the killed trial resumes from its epoch-1 checkpoint
    )
    began = time.monotonic()
    result = run_sweep(settings)
    print(f"faulty sweep: {time.monotonic() - began:.0f}s")
    roles = {}
    for claim in faults.glob("role-*"):
        n = int(claim.name.removeprefix("role-"))
        roles[(faults / "roles").read_text().split()[n]] = claim.read_text()
    client, parent, children = _children(default_tracking_uri(workdir), "faulty")
    return result, roles, client, children


def _nan_lr(summary):
    """Trials that sampled NAN_LR (Tune writes 1e30 to params.json as the string '1e+30')."""
    return summary["param.train.lr"].astype(float) >= NAN_LR / 10


def _row(result, run_id):
    rows = result.summary[result.summary["mlflow_run_id"] == run_id]
    assert len(rows) == 1, result.summary
    return rows.iloc[0]


def test_every_fault_was_injected(faulty_sweep):
    result, roles, _, children = faulty_sweep
    assert set(roles) == {"kill_once", "raise_once", "always_raise"}, roles
    assert _nan_lr(result.summary).any(), "the seed must sample the NaN learning rate at least once"
    assert len(children) == len(result.summary) == 6


def test_a_trial_that_raises_once_is_retried_and_finishes(faulty_sweep):
    result, roles, client, children = faulty_sweep
    run = children[roles["raise_once"]]
    assert run.info.status == "FINISHED"
    assert _row(result, run.info.run_id)["status"] == "finished"
    assert {"ml.hmean", "elliptic.hmean"} <= set(run.data.metrics)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_hmean")]
    assert sorted(steps) == [1, 2]


def test_a_trial_that_always_raises_is_recorded_failed_with_the_error(faulty_sweep):
    result, roles, _, children = faulty_sweep
    run = children[roles["always_raise"]]
    assert run.info.status == "FAILED"
    assert "injected fault: always raise" in run.data.tags["asd.error"]
    failed = result.summary[result.summary["status"] == "error"]
    assert failed["error"].str.contains("always raise").any(), failed[["trial_id", "error"]]


def test_a_nan_loss_fails_only_its_trial_with_the_reason(faulty_sweep):
    result, _, _, children = faulty_sweep
    nan_rows = result.summary[_nan_lr(result.summary)]
    assert (nan_rows["status"] == "error").all()
    assert nan_rows["error"].str.contains("loss became NaN").all(), nan_rows["error"].tolist()
    nan_runs = [c for c in children.values() if float(c.data.params["train.lr"]) == NAN_LR]
    assert len(nan_runs) == len(nan_rows)
    for run in nan_runs:
        assert run.info.status == "FAILED"
        assert "loss became NaN" in run.data.tags["asd.error"]
        assert "train.lr" in run.data.tags["asd.error"], "the reason names the setting to change"


def test_a_killed_worker_resumes_from_its_checkpoint(faulty_sweep):
    result, roles, client, children = faulty_sweep
    run = children[roles["kill_once"]]
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("asd.resumed_from_checkpoint") == "true"
    history = client.get_metric_history(run.info.run_id, "val_hmean")
    assert sorted(m.step for m in history) == [1, 2], "each epoch once: epoch 1 was not redone"
    assert {"ml.hmean", "elliptic.hmean"} <= set(run.data.metrics)


def test_the_other_trials_finish_and_the_winner_is_registered(faulty_sweep):
    result, roles, _, children = faulty_sweep
    good = result.summary[~_nan_lr(result.summary)]
    finished = good[good["status"] == "finished"]
    assert len(finished) == len(good) - 1, good[["trial_id", "status", "error"]]
    finished_runs = {c.info.run_id for c in children.values() if c.info.status == "FINISHED"}
    assert set(finished["mlflow_run_id"]) == finished_runs
    assert result.best_run_id in set(finished["mlflow_run_id"])
    assert result.model_version is not None


# --------------------------------------------------------------------------- MLflow outage


def test_mlflow_down_mid_sweep_then_sync_replays_everything_once(
    ray_with_faults_on_path, data, space, tmp_path, capsys, monkeypatch
):
    from mlflow import MlflowClient

    # The driver's calls to the server killed on purpose fail after one quick retry, not after
    # MLflow's default backoff (7 retries, minutes): the same error reaches the journal.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

    from asd.cli.main import main
    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings

    server_root = tmp_path / "server"
    server_root.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    workdir = tmp_path / "work"
    server = start_mlflow(server_root, port)
    try:
        (_faults_dir() / "server.pid").write_text(str(server.pid))
        settings = SweepSettings(
            space=space(tmp_path, [1.0e-3], 2),
            data=data,
            workdir=workdir,
            name="outage",
            tracking_uri=uri,
            max_concurrent_trials=1,
            epoch_hook="faults:kill_server",
            device="cpu",
        )
        result = run_sweep(settings)
        server.wait(timeout=30)  # the hook killed it during the first trial
        assert (result.summary["status"] == "finished").all(), result.summary
        assert result.model_version is None and "asd sync" in result.deferred
        trial_dirs = [Path(p) for p in result.summary["trial_dir"]]
        assert all((d / "artifacts" / "encoder.pt").is_file() for d in trial_dirs)
        assert list((workdir / "journal" / "outage").glob("*.jsonl"))

        server = start_mlflow(server_root, port)  # same database, same port
        assert main(["sync", "--workdir", str(workdir), "--tracking-uri", uri]) == 0
        assert "replayed=0" not in capsys.readouterr().out
        client, parent, children = _children(uri, "outage")
        assert set(children) == set(result.summary["trial_id"])
        for run in children.values():
            assert run.info.status == "FINISHED"
            # trained at each epoch, validated at ASHA's one rung: the last (grace = epochs)
            for key, expected in (("train.loss", [1, 2]), ("val_hmean", [2])):
                steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
                assert sorted(steps) == expected, (key, steps)
            for key in ("ml.hmean", "elliptic.hmean", "vs_reference.ml.hmean"):
                assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"encoder", "evaluation"} <= artifacts
        assert parent.info.status == "FINISHED"
        assert "best.tune.ml.hmean" in parent.data.metrics

        assert main(["sync", "--workdir", str(workdir), "--tracking-uri", uri]) == 0
        out = capsys.readouterr().out
        assert "replayed=0" in out and "failed=0" in out, out
        _, _, again = _children(uri, "outage")
        for trial, run in again.items():
            assert len(client.get_metric_history(run.info.run_id, "train.loss")) == 2, trial

        # What the deferred message says to do: resume registers the winner (nothing reruns).
        resumed = run_sweep(dataclasses.replace(settings, resume=True))
        assert resumed.model_version is not None and resumed.deferred is None
        version = MlflowClient(uri, uri).get_model_version("asd-encoder", resumed.model_version)
        assert version.run_id == children[resumed.best_trial_id].info.run_id
    finally:
        stop(server)


# --------------------------------------------------------------------------- refused before work


def test_resume_with_another_space_is_refused_naming_both_files(faulty_sweep, space, tmp_path):
    from asd.errors import AsdError
    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings

    result, _, _, _ = faulty_sweep
    storage = Path(result.summary["trial_dir"].iloc[0]).parents[1]  # <storage>/faulty/<trial>
    record = json.loads((storage / "faulty.space.json").read_text())
    other = tmp_path / "other.yaml"
    tiny = space(tmp_path, [1.0e-3], 1).read_text()
    other.write_text(tiny.replace("n_mels: 32", "n_mels: 64"))
    settings = SweepSettings(space=other, data=Path("unused"), workdir=storage.parent,
                             name="faulty", resume=True, device="cpu")  # fmt: skip
    with pytest.raises(AsdError) as err:
        run_sweep(settings)
    message = str(err.value)
    assert record["space"] in message and str(other) in message, message
    assert "was started with search space" in message


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--gpus-per-trial", "1"], "--gpus-per-trial 1.0"),
        (["--cpus-per-trial", "4096"], "--cpus-per-trial 4096.0"),
    ],
)
def test_a_trial_larger_than_the_cluster_is_refused_not_left_pending(
    ray_with_faults_on_path, data, space, tmp_path, capsys, flags, needle
):
    from asd.cli.main import main

    work = tmp_path / "work"
    argv = ["sweep", "--space", str(space(tmp_path, [1.0e-3], 1)), "--data", str(data),
            "--workdir", str(work), *flags]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "cannot run on this Ray cluster" in err
    assert "0 GPUs" in err, err
    assert not (work / "ray_results").exists() and not (work / "mlflow.db").exists()


def test_the_job_entry_point_refuses_a_gpu_trial_on_a_cpu_cluster(data, space, tmp_path):
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, str(TESTS.parent / "jobs" / "sweep.py"), "--space",
         str(space(tmp_path, [1.0e-3], 1)), "--data", str(data), "--workdir", str(work),
         "--gpus-per-trial", "1"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("asd: --cpus-per-trial 1.0 --gpus-per-trial 1.0"), last
    assert "0 GPUs" in last
