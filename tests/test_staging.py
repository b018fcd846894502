"""Staged folders (asd/staging.py): complete or absent, and a dead writer's leftovers go."""

import os
import subprocess
import sys
import time

from asd.staging import HOST, STALE_AFTER_S, pid_alive, publish, remove_stale, tmp_folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_tmp_folder_is_new_and_named_after_this_writer(tmp_path):
    a, b = tmp_folder(tmp_path / "p", "fea-tures"), tmp_folder(tmp_path / "p", "fea-tures")
    assert a != b and a.is_dir() and not any(a.iterdir())
    _, label, host, pid, _ = a.name.split("-")
    assert (label, host, int(pid)) == ("fea_tures", HOST, os.getpid())


def test_only_folders_of_dead_or_long_gone_writers_are_removed(tmp_path):
    mine = tmp_folder(tmp_path, "x")
    dead = tmp_path / f".tmp-x-{HOST}-{_dead_pid()}-abcd1234"
    other_recent = tmp_path / ".tmp-x-otherhost-1-abcd1234"
    other_old = tmp_path / ".tmp-x-otherhost-2-abcd1234"
    broken = tmp_path / ".tmp-broken"
    kept = tmp_path / "results"
    for folder in (dead, other_recent, other_old, broken, kept):
        folder.mkdir()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(other_old, (old, old))
    os.utime(broken, (old, old))
    remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [mine.name, other_recent.name, kept.name]
    )


def test_a_file_touched_recently_keeps_another_hosts_old_folder(tmp_path):
    folder = tmp_path / ".tmp-x-otherhost-2-abcd1234"
    folder.mkdir()
    (folder / "part").write_text("still writing")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(folder, (old, old))  # the folder is old, its content is not
    remove_stale(tmp_path)
    assert folder.exists()


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())
    assert not pid_alive(0) and not pid_alive(-1)


def test_publish_moves_everything_in_and_replaces_same_named_entries(tmp_path):
    target = tmp_path / "out"
    (target / "table").mkdir(parents=True)
    (target / "table" / "old.csv").write_text("old")
    (target / "score.csv").write_text("old")
    (target / "keep.txt").write_text("kept")
    tmp = tmp_folder(tmp_path, "out")
    (tmp / "table").mkdir()
    (tmp / "table" / "new.csv").write_text("new")
    (tmp / "score.csv").write_text("new")
    publish(tmp, target)
    assert not tmp.exists()
    assert sorted(p.name for p in (target / "table").iterdir()) == ["new.csv"]
    assert (target / "score.csv").read_text() == "new"
    assert (target / "keep.txt").read_text() == "kept"
