"""Smoke sweeps with in-process Ray and a real local MLflow store (slow: about a minute each)."""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asd.errors import AsdError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cli_environment")]  # `asd` in-process

PARAMS = {
    "loss.temperature": "{loguniform: [0.05, 0.5]}",
    "train.lr": "{loguniform: [3.0e-4, 3.0e-3]}",
}


@pytest.fixture(scope="module")
def tiny_data(synth_tree):
    return synth_tree(
        machines=("fan", "slider", "valve"), train_source=12, test_per_domain=4, seed=3
    )


@pytest.fixture(scope="module")
def space_file(tiny_space, tmp_path_factory):
    return tiny_space(tmp_path_factory.mktemp("space") / "tiny.yaml", PARAMS, num_samples=3)


@pytest.fixture(scope="module")
def narrow_space_file(tiny_space, tmp_path_factory):
    """The same space on a width-8 network: for the tests that kill a driver, not compare."""
    path = tmp_path_factory.mktemp("space") / "narrow.yaml"
    return tiny_space(path, PARAMS, num_samples=3, fixed={"encoder.width": 8})


@pytest.fixture(scope="module")
def finished_sweep(tiny_data, space_file, tmp_path_factory):
    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings

    workdir = tmp_path_factory.mktemp("work")
    settings = SweepSettings(
        space=space_file,
        data=tiny_data,
        workdir=workdir,
        name="tiny",
        holdout_machines=("valve",),
        promote=True,
        validate_every=1,  # the full evaluation at epoch 1 too, beside the cheap estimate
    )
    result = run_sweep(settings)
    return settings, result


def _client(workdir):
    from mlflow import MlflowClient

    from asd.tracking import default_tracking_uri

    uri = default_tracking_uri(Path(workdir).resolve())
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _sections(client, run_id, workdir):
    """A trial's per-machine table, as MLflow's UI reads it (``tables/sections.json``)."""
    import pandas as pd

    local = client.download_artifacts(run_id, "tables/sections.json", str(workdir / "dl-t"))
    return pd.read_json(local, orient="split")


def _runs(client, sweep_id):
    experiment = client.get_experiment_by_name("asd")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [
        r
        for r in runs
        if r.data.tags.get("asd.sweep_id") == sweep_id and "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 1, "one parent run per sweep, also after a resume"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def test_sweep_records_parent_and_child_runs_with_both_estimators(finished_sweep):
    import numpy as np

    settings, result = finished_sweep
    client, _ = _client(settings.workdir)
    parent, children = _runs(client, "tiny")
    assert len(children) == 3 == len(result.summary)
    # every trial, also one ASHA stopped, has both estimators' figures at every epoch it
    # reported (validate_every=1), each within [0, 1]
    for child in children:
        run_id = child.info.run_id
        assert {"ml.hmean", "elliptic.hmean"} <= set(child.data.metrics), run_id
        epochs = sorted(m.step for m in client.get_metric_history(run_id, "val_hmean"))
        assert epochs, run_id
        for scorer in ("ml", "elliptic"):
            history = client.get_metric_history(run_id, f"{scorer}.hmean")
            assert sorted(m.step for m in history) == epochs, (run_id, scorer)
            assert all(0.0 <= m.value <= 1.0 for m in history)
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert finished, "at least one trial ran to the end"
    for child in finished:
        metrics = child.data.metrics
        # ... and they are two scorers' figures, not one logged twice: the clips' scores
        # differ. (Their hmeans may coincide here: 12 clips per section in 128-d is below
        # full rank, so both fall back to Ledoit-Wolf, mean vs median centred, ranking alike.)
        work = settings.workdir / f"both-{child.info.run_id}"
        ml, elliptic = (_scores(client, child.info.run_id, s, work) for s in ("ml", "elliptic"))
        assert list(ml["clip"]) == list(elliptic["clip"])
        assert not np.allclose(ml["anomaly_score"], elliptic["anomaly_score"])
        # issue 20: a few dozen headline metrics; per machine and section in a table
        assert len([k for k in metrics if not k.startswith("system/")]) <= 40, sorted(metrics)
        assert not [k for k in metrics if ".fan." in k or ".slider." in k]
        sections = _sections(client, child.info.run_id, settings.workdir)
        assert {"fan", "slider"} == set(sections["machine"]), "tuned types only"
        history = client.get_metric_history(child.info.run_id, "val_hmean")
        assert sorted(m.step for m in history) == [1, 2]
        # the per-epoch estimate every epoch; the full evaluation every validate_every epochs
        estimates = client.get_metric_history(child.info.run_id, "val_estimate")
        assert sorted(m.step for m in estimates) == [1, 2]
        full = client.get_metric_history(child.info.run_id, "elliptic.hmean")
        assert sorted(m.step for m in full) == [1, 2]
        assert metrics["time.eval_s"] == pytest.approx(
            metrics["time.validate_s"] + metrics["time.final_s"]
        )
        # issue 16: both untrained references are scored beside the encoder
        for scorer in ("ml", "elliptic"):
            stronger = max(
                metrics[f"reference.{scorer}.hmean"], metrics[f"reference_meanstd.{scorer}.hmean"]
            )
            gap = metrics[f"{scorer}.hmean"] - stronger
            assert metrics[f"vs_reference.{scorer}.hmean"] == pytest.approx(gap)
            assert metrics[f"encoder.{scorer}.hmean"] == metrics[f"{scorer}.hmean"]
        assert child.data.params["loss.temperature"]
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "evaluation/ml")}
        assert "evaluation/ml/roc.png" in artifacts
        assert "evaluation/ml/anomaly_score_fan_section_00_test.csv" in artifacts
    assert "valve" not in json.dumps([c.data.metrics for c in children]), (
        "no trial may score the held-out machine type"
    )
    experiment = client.get_experiment_by_name("asd")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    for group in ("tune", "holdout"):
        assert 0.0 <= parent.data.metrics[f"reference.{group}.hmean"] <= 1.0
        assert f"vs_reference.{group}.hmean" in parent.data.metrics
    stronger = max(  # the stronger untrained reference, with the winner's scorer
        result.holdout_scores[f"{name}.{result.scorer}.hmean"]
        for name in ("reference", "reference_meanstd")
    )
    assert stronger == parent.data.metrics["reference.holdout.hmean"]
    assert parent.data.metrics["best.holdout.ml.hmean"] >= 0.0
    assert parent.data.metrics["best.tune.ml.hmean"] == pytest.approx(
        result.tune_scores["ml.hmean"]
    )
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.csv"}
    # issue 20: the parent's description is the sweep summary, champion beside the reference
    note = parent.data.tags["mlflow.note.content"]
    assert f"Trial `{result.best_trial_id}`" in note and "## Trials, best first" in note
    ref = parent.data.metrics
    for group in ("tune", "holdout"):
        assert f"{100 * ref[f'best.{group}.hmean']:.2f} %" in note
        assert f"{100 * ref[f'reference.{group}.hmean']:.2f} %" in note
    assert "?workflowType=machine_learning" in result.ui and parent.info.run_id in result.ui


def test_each_trial_keeps_its_notes_in_its_run_not_on_the_console(finished_sweep):
    settings, result = finished_sweep
    client, _ = _client(settings.workdir)
    _, children = _runs(client, "tiny")
    notes = []
    for child in children:
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        if "notes.txt" in names:
            path = client.download_artifacts(child.info.run_id, "notes.txt", str(settings.workdir))
            notes.append(Path(path).read_text())
    assert notes and all(text.startswith("WARNING asd.") for text in notes), notes


def _scores(client, run_id, scorer, workdir):
    """A trial's per-clip anomaly scores under one scorer (``evaluation/<scorer>/scores.csv``)."""
    import pandas as pd

    local = client.download_artifacts(
        run_id, f"evaluation/{scorer}/scores.csv", str(workdir / f"dl-{scorer}")
    )
    return pd.read_csv(local)


def _scorer_table(client, run_id, workdir):
    """A trial's summary per detector and scorer (``tables/scorers.json``)."""
    import pandas as pd

    local = client.download_artifacts(run_id, "tables/scorers.json", str(workdir / "dl-s"))
    return pd.read_json(local, orient="split")


def test_both_estimators_score_every_trial_and_differ_where_they_should(finished_sweep):
    """Each trial is scored by both estimators: the same clips, other scores; the untrained
    reference is the same for every trial, the trial's own figures are its own."""
    import numpy as np

    from asd.detect.metrics import METRICS
    from asd.tracking.figures import OWN

    settings, result = finished_sweep
    client, _ = _client(settings.workdir)
    _, children = _runs(client, "tiny")
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert finished
    by_run = result.summary.set_index("mlflow_run_id")
    for child in finished:
        run_id, metrics = child.info.run_id, child.data.metrics
        workdir = settings.workdir / run_id
        table = _scorer_table(client, run_id, workdir).set_index(["detector", "scorer"])
        for scorer in ("ml", "elliptic"):
            row = table.loc[(OWN, scorer)]
            for key in ("hmean", *METRICS):
                assert 0.0 <= row[key] <= 1.0, (scorer, key)
            # the table, MLflow's metric and the sweep's summary (what Tune got) agree
            assert row["hmean"] == pytest.approx(metrics[f"{scorer}.hmean"])
            assert by_run.loc[run_id, f"{scorer}.hmean"] == pytest.approx(row["hmean"])
            for companion in ("reference", "reference_meanstd"):
                assert table.loc[(companion, scorer), "hmean"] == pytest.approx(
                    metrics[f"{companion}.{scorer}.hmean"]
                )
        sections = _sections(client, run_id, settings.workdir)
        mine = sections[sections["detector"] == OWN]
        per_scorer = {s: g.set_index(["machine", "section"]) for s, g in mine.groupby("scorer")}
        assert per_scorer["ml"].index.equals(per_scorer["elliptic"].index)
        ml, elliptic = (_scores(client, run_id, s, workdir) for s in ("ml", "elliptic"))
        assert list(ml["clip"]) == list(elliptic["clip"]), "both score the same clips"
        assert np.isfinite(ml["anomaly_score"]).all()
        assert np.isfinite(elliptic["anomaly_score"]).all()
        assert not np.allclose(ml["anomaly_score"], elliptic["anomaly_score"]), (
            "the maximum-likelihood and the robust (MCD) covariance give other distances"
        )
    for key in ("reference.ml.hmean", "reference.elliptic.hmean", "reference_meanstd.ml.hmean"):
        values = {c.data.metrics[key] for c in finished}
        assert len(values) == 1, f"{key}: the untrained reference differs between trials"
    if len(finished) > 1:
        own = {(c.data.metrics["ml.hmean"], c.data.metrics["elliptic.hmean"]) for c in finished}
        assert len(own) > 1, "each trial reports its own figures, not a shared one"


def test_sweep_registers_and_promotes_the_best_encoder(finished_sweep):
    settings, result = finished_sweep
    client, uri = _client(settings.workdir)
    version = client.get_model_version_by_alias(settings.model_name, "champion")
    assert str(version.version) == result.model_version
    assert version.tags["sweep_id"] == "tiny"
    assert version.tags["metric"] == "holdout.hmean"
    assert version.tags["estimator"] in ("ml", "elliptic")
    # issue 20: descriptions, and the version's source is the trial's logged model
    assert "untrained reference" in version.description and result.best_trial_id in (
        version.description
    )
    assert version.source.startswith("models:/m-")
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert model.source_run_id == result.best_run_id
    described = client.get_registered_model(settings.model_name).description
    assert f"Champion (alias `champion`): version {version.version}" in described
    detector = client.get_model_version_by_alias("asd-detector", "champion")
    assert str(detector.version) == result.detector_version
    assert detector.tags["data_fingerprint"] == version.tags["data_fingerprint"]
    assert "valve/00" in detector.tags["sections"]  # fitted on the held-out type too

    from asd.serve.registry import load_champion

    encoder, cfg, extra = load_champion(uri, settings.model_name, settings.workdir / "dl")
    assert cfg.features.n_mels == 32
    assert extra["data_fingerprint"]


def test_promotion_refuses_a_worse_candidate(finished_sweep):
    from asd.cli.main import main
    from asd.serve.registry import RegistryTags, register_encoder

    settings, result = finished_sweep
    client, uri = _client(settings.workdir)
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    tags = RegistryTags.from_tags(champion.tags)  # drops the champion's asd.* bookkeeping
    worse_tags = dataclasses.replace(tags, metric_value=tags.metric_value - 0.1)
    worse = register_encoder(uri, champion.source, settings.model_name, worse_tags)
    code = main(["promote", "--version", worse, "--tracking-uri", uri])
    assert code == 1
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == (
        champion.version
    )


def test_existing_sweep_name_needs_resume(finished_sweep):
    from asd.sweep.runner import run_sweep

    settings, _ = finished_sweep
    with pytest.raises(AsdError, match="--resume"):
        run_sweep(settings)


def _terminated(sweep_dir: Path) -> set[str]:
    done = set()
    for state in glob.glob(str(sweep_dir / "experiment_state-*.json")):
        try:
            data = json.loads(Path(state).read_text())
        except (OSError, ValueError):
            continue  # being rewritten right now
        for trial_json, _ in data["trial_data"]:
            trial = json.loads(trial_json)
            if trial["status"] == "TERMINATED":
                done.add(trial["trial_id"])
    return done


def test_resume_after_a_killed_driver_keeps_finished_trials(
    tiny_data, narrow_space_file, tmp_path
):
    workdir = tmp_path / "work"
    cmd = [
        sys.executable,
        "-m",
        "asd.cli.main",
        "sweep",
        "--space",
        str(narrow_space_file),
        "--data",
        str(tiny_data),
        "--workdir",
        str(workdir),
        "--name",
        "killed",
        "--max-concurrent",
        "1",
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    sweep_dir = workdir / "ray_results" / "killed"
    deadline = time.monotonic() + 300
    while not _terminated(sweep_dir):
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its in-process Ray, at once
    driver.wait()
    done_before = _terminated(sweep_dir)
    results_before = {trial: _result_lines(sweep_dir, trial) for trial in done_before}

    resumed = subprocess.run(
        [*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "== sweep killed: 3 trials" in resumed.stdout
    console = resumed.stdout + resumed.stderr
    for noise in ("Fatal Python error", "LedoitWolf", "Configuration for experiment",
                  "Checkpoint successfully created", "system_metrics_monitor"):  # fmt: skip
        assert noise not in console, console[-3000:]
    assert len(_terminated(sweep_dir)) == 3
    for trial, lines in results_before.items():
        assert _result_lines(sweep_dir, trial) == lines, f"finished trial {trial} was rerun"

    client, _ = _client(workdir)
    parent, children = _runs(client, "killed")
    assert len(children) == 3, "no trial lost, none recorded twice"
    for child in children:
        # validated at ASHA's one rung, the last epoch (grace_period = epochs); trained at each
        validated = [m.step for m in client.get_metric_history(child.info.run_id, "val_hmean")]
        assert set(validated) == {2}
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train.loss")]
        assert set(steps) == {1, 2}
        if child.data.tags["asd.trial_id"] in done_before:
            assert sorted(steps) == [1, 2], "a finished trial logs each epoch once"
            assert validated == [2]


def test_sigterm_to_the_driver_closes_its_trial_runs_and_its_ray(
    tiny_data, narrow_space_file, tmp_path
):
    workdir = tmp_path / "work"
    cmd = [sys.executable, "-m", "asd.cli.main", "sweep", "--space", str(narrow_space_file),
           "--data", str(tiny_data), "--workdir", str(workdir), "--name", "stopped",
           "--max-concurrent", "2"]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    client, _ = _client(workdir)
    deadline = time.monotonic() + 300
    while True:  # until a trial's MLflow run is RUNNING
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no trial started in time"
        try:
            _, children = _runs(client, "stopped")
        except Exception:  # noqa: BLE001 - the store or the parent run is not there yet
            children = []
        if any(c.info.status == "RUNNING" for c in children):
            break
        time.sleep(1.0)
    driver.send_signal(signal.SIGTERM)  # the driver only, as a scheduler would
    driver.wait(timeout=120)
    parent, children = _runs(client, "stopped")
    assert parent.info.status == "FAILED"
    statuses = {c.info.run_id: client.get_run(c.info.run_id).info.status for c in children}
    assert children and "RUNNING" not in statuses.values(), statuses
    deadline = time.monotonic() + 60
    while _group_alive(driver.pid):  # Ray's raylet, GCS, dashboard agents: shut down too
        assert time.monotonic() < deadline, "the in-process Ray outlived its driver"
        time.sleep(1.0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _result_lines(sweep_dir: Path, trial_id: str) -> int:
    (folder,) = glob.glob(str(sweep_dir / f"run_trial_{trial_id}_*"))
    return len(Path(folder, "result.json").read_text().splitlines())


def test_default_names_are_new_per_run_and_resume_finds_the_latest(tmp_path):
    from asd.sweep.runner import _default_name

    with pytest.raises(AsdError, match="nothing to resume"):
        _default_name("smoke", tmp_path, resume=True)
    first = _default_name("smoke", tmp_path, resume=False)
    assert first.startswith("smoke-")
    (tmp_path / "smoke-20260101-000000").mkdir()
    time.sleep(0.01)
    (tmp_path / "smoke-20260102-000000").mkdir()
    (tmp_path / "other-20260103-000000").mkdir()
    assert _default_name("smoke", tmp_path, resume=True) == "smoke-20260102-000000"


def test_the_champion_is_used_by_evaluate(finished_sweep, tiny_data, capsys):
    from asd.cli.main import main

    settings, _ = finished_sweep
    _, uri = _client(settings.workdir)
    code = main(
        [
            "evaluate",
            "--data",
            str(tiny_data),
            "--workdir",
            str(settings.workdir),
            "--encoder",
            "models:/asd-encoder@champion",
            "--tracking-uri",
            uri,
            "--estimator",
            "ml",
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "encoder models:/asd-encoder@champion" in out and "official score" in out
    assert (settings.workdir / "models" / "asd-encoder" / "champion").is_dir()


def test_a_reference_family_trial_trains_nothing_and_reports_once(tiny_data, tiny_space, tmp_path):
    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings
    from asd.sweep.summary import format_summary

    params = {**PARAMS, "scoring.family": "{choice: [reference]}"}
    space = tiny_space(tmp_path / "reference.yaml", params, num_samples=1)
    settings = SweepSettings(
        space=space,
        data=tiny_data,
        workdir=tmp_path / "work",
        name="ref",
        holdout_machines=("valve",),
    )
    result = run_sweep(settings)
    row = result.summary.iloc[0]
    assert (row["status"], row["family"], row["epochs"]) == ("finished", "reference", 0)
    assert row["train_s"] == 0.0 and row["final"]
    assert row["val_hmean"] == row["reference.ml.hmean"] == row["ml.hmean"]
    assert row["vs_reference.hmean"] <= 0.0  # against the stronger of the two references
    assert result.model_version is None and "the winner is untrained" in result.note
    assert result.detector_version is not None  # the detector is what gets served
    assert "asd-detector" in format_summary(result)
    artifacts = Path(row["trial_dir"]) / "artifacts"
    assert (artifacts / "config.json").is_file() and not (artifacts / "encoder.pt").exists()
    fetched = settings.workdir / "winners" / "ref"  # from the trial's last Tune checkpoint
    assert (fetched / "config.json").is_file() and not (fetched / "encoder.pt").exists()

    client, _ = _client(settings.workdir)
    parent, children = _runs(client, "ref")
    history = client.get_metric_history(children[0].info.run_id, "val_hmean")
    assert [m.step for m in history] == [0], "evaluated once, one result"
    assert not any(k.startswith("train.") for k in children[0].data.metrics), "no training"
    assert parent.data.tags["asd.best_family"] == "reference"
    assert parent.data.metrics["vs_reference.holdout.hmean"] <= 0.0
    printed = format_summary(result)
    assert "vs untrained reference" in printed and " points, ml)" in printed
    assert "1 untrained trial (log-mel detectors): nothing to train, evaluated once" in printed
    assert "members: logmel/mean/ml" in printed


def test_optuna_dashboard_serves_the_finished_sweep(finished_sweep, tmp_path):
    """The README's `optuna-dashboard sqlite:///.../<name>.optuna.db`, over HTTP."""
    import urllib.request

    from servers import optuna_dashboard

    settings, result = finished_sweep
    db = Path(settings.workdir).resolve() / "ray_results" / f"{result.name}.optuna.db"
    with optuna_dashboard(f"sqlite:///{db}", tmp_path) as uri:
        with urllib.request.urlopen(f"{uri}/api/studies", timeout=10) as response:
            studies = json.load(response)["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == result.name]
        with urllib.request.urlopen(f"{uri}/api/studies/{study['study_id']}", timeout=10) as r:
            trials = json.load(r)["trials"]
    assert len(trials) == len(result.summary) == 3
    assert {t["state"] for t in trials} <= {"Complete", "Pruned", "Fail"}
    assert any(t["state"] == "Complete" and t["values"] for t in trials)


DASHBOARD_PROBE = """
import json, sys, time, urllib.request
from pathlib import Path
from asd.sweep.runner import _init_ray
from asd.sweep.settings import SweepSettings

url = _init_ray(SweepSettings(space=Path("smoke"), dashboard=True))
for _ in range(120):
    try:
        with urllib.request.urlopen(f"http://{url}/api/version", timeout=5) as response:
            print(json.dumps({"url": url, "version": json.load(response)}))
            sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit(f"no answer from {url}")
"""


def test_dashboard_flag_serves_rays_dashboard_on_localhost(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    probe = subprocess.run(
        [sys.executable, "-c", DASHBOARD_PROBE],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    answer = json.loads(probe.stdout.strip().splitlines()[-1])
    assert answer["url"].startswith("127.0.0.1:")
    assert answer["version"]["ray_version"]
