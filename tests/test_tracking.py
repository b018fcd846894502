"""Tracker against a real local MLflow SQLite store (one store per module: creating it is slow)."""

import math
import uuid

import pandas as pd
import pytest
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from servers import free_port

from asd.errors import AsdError
from asd.tracking import (
    TAG_PARENT,
    TAG_SWEEP,
    TAG_TRIAL,
    Tracker,
    check_tracking,
    default_tracking_uri,
    sync_journal,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = default_tracking_uri(tmp_path_factory.mktemp("mlflow"))
    Tracker(uri, "warmup").start_sweep("warmup", {})  # creates the database once
    return uri


@pytest.fixture
def tracker(store):
    return Tracker(store, f"exp-{uuid.uuid4().hex[:8]}")


def runs_of(tracker, experiment=None):
    exp = tracker.client.get_experiment_by_name(experiment or tracker.experiment)
    return tracker.client.search_runs([exp.experiment_id]) if exp else []


def test_default_tracking_uri_is_absolute_sqlite(tmp_path):
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_check_tracking_names_an_unreachable_server():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AsdError, match=f"cannot reach MLflow at {uri} \\(connection refused\\)"):
        check_tracking(uri, timeout_s=1.0)


def test_check_tracking_sqlite_needs_its_folder(tmp_path):
    check_tracking(default_tracking_uri(tmp_path))
    with pytest.raises(AsdError, match="does not exist"):
        check_tracking(default_tracking_uri(tmp_path / "missing"))


def test_artifacts_live_beside_the_database(tracker, store):
    run_id = tracker.start_sweep("s", {})
    uri = tracker.client.get_run(run_id).info.artifact_uri
    assert uri.startswith(f"file://{store[len('sqlite:///') :].rsplit('/', 1)[0]}/mlartifacts/")


def test_trial_is_a_child_of_the_sweep(tracker):
    parent = tracker.start_sweep("sweep-a", {"train.epochs": 40, "augment.recipes": ["noise"]})
    child = tracker.start_trial(parent, "trial-1", {"loss.temperature": 0.1}, {"k": "v"})
    run = tracker.client.get_run(child)
    assert run.data.tags[TAG_PARENT] == parent
    assert run.data.tags[TAG_TRIAL] == "trial-1"
    assert run.data.tags["k"] == "v"
    assert run.data.params == {"loss.temperature": "0.1"}
    sweep = tracker.client.get_run(parent)
    assert sweep.data.tags[TAG_SWEEP] == "sweep-a"
    assert sweep.data.params["augment.recipes"] == '["noise"]'


def test_start_is_idempotent(tracker):
    parent = tracker.start_sweep("sweep-b", {"a": 1})
    child = tracker.start_trial(parent, "trial-1", {"b": 2})
    tracker.finish(child, "FAILED")
    assert tracker.start_sweep("sweep-b", {"a": 1}) == parent
    assert tracker.start_trial(parent, "trial-1", {"b": 2}) == child  # a retried trial
    assert tracker.client.get_run(child).info.status == "RUNNING"
    assert tracker.start_trial(parent, "trial-2", {"b": 3}) != child
    assert len(runs_of(tracker)) == 3


def test_changed_params_on_resume_raise(tracker):
    parent = tracker.start_sweep("sweep-c", {"a": 1})
    with pytest.raises(AsdError, match="MLflow refused"):
        tracker.log_params(parent, {"a": 2})


def test_metrics_are_batched_by_1000(tracker, monkeypatch):
    """Counted where the requests reach the store: MLflow's client does the splitting."""
    run_id = tracker.start_sweep("sweep-d", {})
    calls = []
    original = SqlAlchemyStore.log_batch

    def counting(self, run_id, metrics, params, tags):
        calls.append(len(metrics))
        return original(self, run_id, metrics, params, tags)

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", counting)
    tracker.log_metrics(run_id, {f"m{i}": float(i) for i in range(2500)}, step=0)
    assert calls == [1000, 1000, 500]
    assert len(tracker.client.get_run(run_id).data.metrics) == 2500


def test_params_and_tags_beyond_one_request_are_all_logged(tracker):
    run_id = tracker.start_sweep("sweep-d2", {f"p{i}": i for i in range(250)})
    tracker.set_tags(run_id, {f"t{i}": i for i in range(250)})
    data = tracker.client.get_run(run_id).data
    assert len(data.params) == 250 and data.params["p249"] == "249"
    assert {f"t{i}" for i in range(250)} <= set(data.tags)


def test_metric_history_keeps_steps(tracker):
    run_id = tracker.start_sweep("sweep-e", {})
    for epoch in range(3):
        tracker.log_metrics(run_id, {"loss": 1.0 / (epoch + 1), "lr": 0.1}, step=epoch)
    history = tracker.client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx([1.0, 0.5, 1 / 3])


def test_non_finite_metrics_are_skipped(tracker, caplog):
    run_id = tracker.start_sweep("sweep-f", {})
    tracker.log_metrics(run_id, {"ok": 1.0, "bad": math.nan, "worse": math.inf}, step=1)
    assert tracker.client.get_run(run_id).data.metrics == {"ok": 1.0}
    assert "bad" in caplog.text and "worse" in caplog.text


def test_artifacts_tables_tags_and_finish(tracker, tmp_path):
    run_id = tracker.start_sweep("sweep-g", {})
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "roc.txt").write_text("roc")
    tracker.log_artifact(run_id, tmp_path / "a.txt", "notes")
    tracker.log_artifacts(run_id, tmp_path / "plots", "plots")
    tracker.log_table(run_id, pd.DataFrame({"machine": ["fan"], "auc": [0.7]}), "tables/s.csv")
    tracker.set_tags(run_id, {"best": "yes"})
    tracker.finish(run_id, "KILLED")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["best"] == "yes"
    local = tracker.client.download_artifacts(run_id, "", str(tmp_path / "dl"))
    assert open(f"{local}/notes/a.txt").read() == "a"
    assert open(f"{local}/plots/roc.txt").read() == "roc"
    assert pd.read_csv(f"{local}/tables/s.csv").to_dict("list") == {
        "machine": ["fan"],
        "auc": [0.7],
    }
    with pytest.raises(AsdError, match="status must be one of"):
        tracker.finish(run_id, "DONE")


def test_online_journal_is_all_acked(store, tmp_path):
    tracker = Tracker(store, f"exp-{uuid.uuid4().hex[:8]}", journal_dir=tmp_path / "j")
    run_id = tracker.start_sweep("sweep-h", {"a": 1})
    tracker.log_metrics(run_id, {"x": 1.0}, step=0)
    tracker.finish(run_id)
    assert tracker.pending == 0
    assert sync_journal(tmp_path / "j", store).replayed == 0


def offline(journal, experiment):
    """A tracker whose MLflow is down (nothing listens on its port): every write waits."""
    down = f"http://127.0.0.1:{free_port()}"
    return Tracker(down, experiment, journal_dir=journal, probe_timeout_s=0.5)


def test_offline_journal_replays_exactly_once(store, tmp_path):
    journal = tmp_path / "journal"
    experiment = f"exp-{uuid.uuid4().hex[:8]}"
    driver = offline(journal, experiment)
    parent = driver.start_sweep("sweep-i", {"train.epochs": 3})
    assert parent.startswith("pending-")
    # a trial in another process: its own tracker and journal file, the placeholder parent
    trial = offline(journal, experiment)
    child = trial.start_trial(parent, "t1", {"loss.temperature": 0.1})
    for epoch in range(3):
        trial.log_metrics(child, {"loss": 3.0 - epoch, "lr": 0.5}, step=epoch)
    trial.log_table(child, pd.DataFrame({"a": [1]}), "tables/t.csv")
    ckpt = tmp_path / "final.txt"
    ckpt.write_text("weights")
    trial.log_artifact(child, ckpt)
    ckpt.unlink()  # the journal kept a copy
    trial.set_tags(child, {"state": "done"})
    trial.finish(child)
    driver.finish(parent)
    assert (driver.pending, trial.pending) == (2, 8)
    assert len(list(journal.glob("*.jsonl"))) == 2

    first = sync_journal(journal, store)
    assert (first.replayed, first.skipped, first.failed) == (10, 0, 0)
    second = sync_journal(journal, store)
    assert (second.replayed, second.skipped) == (0, 10)

    reader = Tracker(store, experiment)
    runs = runs_of(reader)
    assert len(runs) == 2
    child_run = next(r for r in runs if r.data.tags.get(TAG_TRIAL) == "t1")
    parent_run = next(r for r in runs if r.data.tags.get(TAG_SWEEP) == "sweep-i")
    assert child_run.data.tags[TAG_PARENT] == parent_run.info.run_id
    assert child_run.info.status == parent_run.info.status == "FINISHED"
    assert child_run.data.params == {"loss.temperature": "0.1"}
    history = reader.client.get_metric_history(child_run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    names = {a.path for a in reader.client.list_artifacts(child_run.info.run_id)}
    assert names == {"final.txt", "tables"}


def test_replay_repeats_nothing_even_without_acks(store, tmp_path):
    """A crash between applying and acking: the operations themselves are idempotent."""
    journal = tmp_path / "journal"
    experiment = f"exp-{uuid.uuid4().hex[:8]}"
    tracker = offline(journal, experiment)
    run_id = tracker.start_sweep("sweep-j", {"a": 1})
    tracker.log_metrics(run_id, {"loss": 1.0}, step=0)
    tracker.finish(run_id)
    (path,) = journal.glob("*.jsonl")
    intents = path.read_text()
    assert sync_journal(journal, store).replayed == 3
    path.write_text(intents)  # forget the acks
    assert sync_journal(journal, store).replayed == 3
    reader = Tracker(store, experiment)
    (run,) = runs_of(reader)
    assert len(reader.client.get_metric_history(run.info.run_id, "loss")) == 1


def test_without_journal_an_outage_raises_at_once():
    tracker = Tracker(f"http://127.0.0.1:{free_port()}", "x", probe_timeout_s=0.5)
    with pytest.raises(AsdError, match="lost MLflow at http://127.0.0.1:.*connection refused"):
        tracker.start_sweep("s", {})


def test_tracker_catches_up_in_order_when_mlflow_returns(store, tmp_path, monkeypatch):
    journal = tmp_path / "journal"
    tracker = Tracker(store, f"exp-{uuid.uuid4().hex[:8]}", journal_dir=journal)
    parent = tracker.start_sweep("sweep-k", {})
    working = tracker.store.apply

    def down(*args, **kwargs):
        raise ConnectionError("server went away")

    monkeypatch.setattr(tracker.store, "apply", down)
    tracker.log_metrics(parent, {"best": 0.5}, step=0)
    child = tracker.start_trial(parent, "t1", {"a": 1})
    tracker.log_metrics(child, {"loss": 2.0}, step=0)
    assert child.startswith("pending-") and tracker.pending == 3

    monkeypatch.setattr(tracker.store, "apply", working)
    tracker.finish(child)  # the next write flushes the backlog first, in order
    assert tracker.pending == 0
    (run,) = [r for r in runs_of(tracker) if r.data.tags.get(TAG_TRIAL) == "t1"]
    assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 2.0}
    assert tracker.client.get_run(parent).data.metrics == {"best": 0.5}
    assert sync_journal(journal, store).replayed == 0
