"""Run folders (asd/cli/runfolder.py): resumed only by the same run, one writer at a time."""

import json
import multiprocessing

import pytest

from asd.cli.runfolder import RECORD, run_folder
from asd.errors import AsdError

CFG = {"train.lr": 0.01, "train.epochs": 3}


def _finish(out):
    """What a finished training leaves beside config.json and run.json."""
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"ckpt")
    (out / "encoder.pt").write_bytes(b"enc")


def test_a_new_folder_starts_and_records_the_run(tmp_path):
    out = tmp_path / "run"
    with run_folder(out, CFG, "fp1") as resume:
        assert resume is False
        assert json.loads((out / "config.json").read_text()) == CFG
        assert json.loads((out / RECORD).read_text()) == {"config": CFG, "data_fingerprint": "fp1"}


def test_the_same_run_resumes_and_another_is_refused_naming_what_differs(tmp_path):
    out = tmp_path / "run"
    with run_folder(out, CFG, "fp1"):
        _finish(out)
    with run_folder(out, CFG, "fp1", mode="resume") as resume:
        assert resume is True
    with run_folder(out, CFG, "fp1") as resume:  # auto resumes a matching run too
        assert resume is True
    with pytest.raises(AsdError, match=r"config differs in train\.lr; trained on other data"):
        with run_folder(out, {**CFG, "train.lr": 0.1}, "fp2"):
            pass
    with pytest.raises(AsdError, match="fingerprint fp1, now fp2"):
        with run_folder(out, CFG, "fp2"):
            pass
    assert json.loads((out / RECORD).read_text())["data_fingerprint"] == "fp1"  # untouched


def test_a_new_config_key_counts_as_a_difference(tmp_path):
    out = tmp_path / "run"
    with run_folder(out, CFG, "fp"):
        pass
    with pytest.raises(AsdError, match=r"differs in seed\b"):
        with run_folder(out, {**CFG, "seed": 1}, "fp"):
            pass


def test_overwrite_removes_the_old_run_and_keeps_other_files(tmp_path):
    out = tmp_path / "run"
    with run_folder(out, CFG, "fp1"):
        _finish(out)
    (out / "notes.txt").write_text("mine")
    with run_folder(out, {"other": 1}, "fp2", mode="overwrite") as resume:
        assert resume is False
        assert not (out / "encoder.pt").exists() and not (out / "checkpoints").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / RECORD).read_text())["data_fingerprint"] == "fp2"


def test_resume_needs_a_run_and_its_checkpoint(tmp_path):
    with pytest.raises(AsdError, match="nothing to resume"):
        with run_folder(tmp_path / "empty", CFG, "fp", mode="resume"):
            pass
    out = tmp_path / "run"
    with run_folder(out, CFG, "fp"):
        pass  # stopped before its first checkpoint
    with pytest.raises(AsdError, match=r"no checkpoint \(checkpoints/last.pt\)"):
        with run_folder(out, CFG, "fp", mode="resume"):
            pass


def test_unreadable_records_unknown_modes_and_files_are_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "encoder.pt").write_bytes(b"from somewhere")  # a run without run.json
    with pytest.raises(AsdError, match="no readable run.json"):
        with run_folder(out, CFG, "fp"):
            pass
    with pytest.raises(AsdError, match="unknown run-folder mode 'fresh'"):
        with run_folder(out, CFG, "fp", mode="fresh"):
            pass
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(AsdError, match="is a file, not a run folder"):
        with run_folder(afile, CFG, "fp"):
            pass


def _try_second_writer(out, queue):
    try:
        with run_folder(out, CFG, "fp"):
            queue.put("entered")
    except AsdError as exc:
        queue.put(str(exc))


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    out = tmp_path / "run"
    ctx = multiprocessing.get_context("fork")
    with run_folder(out, CFG, "fp"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_try_second_writer, args=(out, queue))
        proc.start()
        answer = queue.get(timeout=30)
        proc.join(timeout=30)
    assert "is in use by another asd train (pid " in answer
    with run_folder(out, CFG, "fp"):  # free again once the first has finished
        pass
