"""The journal's file format, its one error policy and the replay, against a local SQLite store."""

import json
import uuid

import pytest
from mlflow import MlflowClient

from asd.errors import AsdError
from asd.tracking import default_tracking_uri
from asd.tracking.journal import (
    PENDING,
    append,
    apply_entry,
    blob_dir,
    keep_blobs,
    read_journal,
    refs_in,
    sync_journal,
    with_blobs,
)
from asd.tracking.store import TAG_SWEEP, Store, Unresolved


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    uri = default_tracking_uri(tmp_path_factory.mktemp("mlflow"))
    MlflowClient(uri).search_experiments()  # creates the database once: it is slow
    return uri


def _start(seq, ref, sweep_id):
    args = {"experiment": "journal", "sweep_id": sweep_id, "ref": ref, "tags": {}, "params": {}}
    return {"seq": seq, "ts": 1000.0 + seq, "op": "start_sweep", "args": args}


def _params(seq, run, params):
    return {
        "seq": seq,
        "ts": 1000.0 + seq,
        "op": "log_params",
        "args": {"run": run, "params": params},
    }


def test_read_journal_sorts_intents_and_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "1-abcd.jsonl"
    append(path, _params(2, "r", {"a": "1"}))
    append(path, _params(1, "r", {"b": "2"}))
    append(path, {"ack": 1, "result": {"ref": "pending-x", "run_id": "r"}})
    append(path, {"fail": 2, "error": "refused"})
    with open(path, "a") as fh:
        fh.write('{"seq": 3, "ts": 1.0, "op": "log_pa')  # the crash mid-line
    intents, acks, failed = read_journal(path)
    assert [entry["seq"] for entry in intents] == [1, 2]
    assert acks == {1: {"ref": "pending-x", "run_id": "r"}} and failed == {2}
    assert refs_in(tmp_path) == {"pending-x": "r"}
    append(None, {"seq": 9})  # no journal: nothing written anywhere
    assert len(path.read_text().splitlines()) == 5


def test_a_line_is_strict_json_one_record_per_line(tmp_path):
    path = tmp_path / "j.jsonl"
    with pytest.raises(ValueError):
        append(path, {"seq": 1, "args": {"value": float("nan")}})
    append(path, {"seq": 1, "args": {"text": "two\nlines"}})
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["args"]["text"] == "two\nlines"


def test_pending_files_are_kept_and_replayed_from_the_copy(tmp_path):
    journal = tmp_path / "journal" / "7-0001.jsonl"
    journal.parent.mkdir()
    source = tmp_path / "scores.csv"
    source.write_text("a,b\n1,2\n")
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "roc.png").write_bytes(b"png")
    file_entry = {"seq": 3, "args": {"run": "r", "path": str(source), "artifact_path": None}}
    dir_entry = {"seq": 4, "args": {"run": "r", "dir": str(folder), "artifact_path": "p"}}
    keep_blobs(journal, file_entry)
    keep_blobs(journal, dir_entry)
    source.unlink()  # the trial's folder is gone by the time of the replay
    (folder / "roc.png").unlink()
    kept = with_blobs(journal, file_entry)
    assert kept["path"] == str(blob_dir(journal, 3) / "scores.csv")
    assert (blob_dir(journal, 3) / "scores.csv").read_text() == "a,b\n1,2\n"
    assert (blob_dir(journal, 4) / "plots" / "roc.png").read_bytes() == b"png"
    assert with_blobs(journal, dir_entry)["dir"] == str(blob_dir(journal, 4) / "plots")
    assert with_blobs(None, file_entry) == file_entry["args"]
    assert with_blobs(journal, {"seq": 5, "args": {"path": "x"}}) == {"path": "x"}  # no copy


def test_apply_entry_acks_leaves_pending_or_records_a_refusal(uri, tmp_path):
    store, path, refs = Store(uri), tmp_path / "j.jsonl", {}
    sweep_id = uuid.uuid4().hex
    done = apply_entry(store, path, _start(1, f"{PENDING}a", sweep_id), refs, lambda r: r)
    assert done.state == "done" and refs == {f"{PENDING}a": done.result["run_id"]}
    run_id = done.result["run_id"]

    def waiting(ref):
        raise Unresolved(ref)

    pending = apply_entry(store, path, _params(2, f"{PENDING}b", {"x": "1"}), refs, waiting)
    assert pending.state == "pending" and isinstance(pending.error, Unresolved)
    assert (
        apply_entry(store, path, _params(3, run_id, {"x": "1"}), refs, lambda r: r).state == "done"
    )
    changed = apply_entry(store, path, _params(4, run_id, {"x": "2"}), refs, lambda r: r)
    assert changed.state == "failed"  # MLflow refuses to change a logged param
    unknown = {"seq": 5, "ts": 1.0, "op": "drop_table", "args": {}}
    assert apply_entry(store, path, unknown, refs, lambda r: r).state == "failed"
    intents, acks, failed = read_journal(path)
    assert intents == [] and set(acks) == {1, 3} and failed == {4, 5}  # pending: no record
    assert MlflowClient(uri).get_run(run_id).data.params == {"x": "1"}


def test_sync_resolves_a_placeholder_started_in_another_file_and_replays_once(uri, tmp_path):
    journal = tmp_path / "journal"
    journal.mkdir()
    sweep_id = uuid.uuid4().hex
    # a trial's file, named first, logs onto the driver's sweep run still pending in its file
    append(journal / "1-trial.jsonl", _params(1, f"{PENDING}sweep", {"trial": "t1"}))
    append(journal / "2-driver.jsonl", _start(1, f"{PENDING}sweep", sweep_id))
    append(journal / "2-driver.jsonl", _params(2, f"{PENDING}sweep", {"driver": "d"}))
    first = sync_journal(journal, uri)
    assert (first.replayed, first.skipped, first.failed) == (3, 0, 0)
    client = MlflowClient(uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("journal").experiment_id],
        f"tags.`{TAG_SWEEP}` = '{sweep_id}'",
    )
    assert run.data.params == {"trial": "t1", "driver": "d"}
    assert refs_in(journal) == {f"{PENDING}sweep": run.info.run_id}
    second = sync_journal(journal, uri)
    assert (second.replayed, second.skipped) == (0, 3)


def test_a_placeholder_no_journal_starts_is_a_refusal_never_retried(uri, tmp_path, caplog):
    journal = tmp_path / "journal"
    journal.mkdir()
    append(journal / "1-orphan.jsonl", _params(1, f"{PENDING}nowhere", {"a": "1"}))
    report = sync_journal(journal, uri)
    assert (report.replayed, report.skipped, report.failed) == (0, 0, 1)
    assert f"unknown run {PENDING}nowhere" in caplog.text
    assert read_journal(journal / "1-orphan.jsonl")[2] == {1}
    again = sync_journal(journal, uri)
    assert (again.replayed, again.skipped, again.failed) == (0, 1, 0)
    with pytest.raises(AsdError, match="no journal folder"):
        sync_journal(tmp_path / "absent", uri)
