"""Data fingerprints (asd/data/fingerprint.py): the bytes decide, not the path or the clock."""

import json
import os
import shutil

import pandas as pd
import pytest

from asd.data.fingerprint import HashStore, clip_digests, content_fingerprint, file_digest
from asd.errors import AsdError


def _tree(root, clips=None):
    """``root/<machine>/<split>/<name>`` files with the given bytes; their index."""
    clips = clips or {("fan", "train", "a.wav"): b"aaaa", ("fan", "test", "b.wav"): b"bbbb"}
    paths = []
    for (machine, split, name), data in clips.items():
        path = root / machine / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(str(path))
    return pd.DataFrame({"path": paths})


def test_the_same_bytes_elsewhere_have_the_same_fingerprint(tmp_path):
    a = _tree(tmp_path / "a")
    b = _tree(tmp_path / "deep" / "b")
    assert content_fingerprint(a) == content_fingerprint(b)
    assert len(content_fingerprint(a)) == 16


def test_a_clip_rewritten_in_place_at_the_same_size_changes_it(tmp_path):
    index = _tree(tmp_path)
    store = tmp_path / "cache" / "hashes.json"
    before = content_fingerprint(index, store)
    path = index["path"][0]
    stat = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"AAAA")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert content_fingerprint(index, store) != before


def test_names_machines_and_splits_are_part_of_the_data(tmp_path):
    base = content_fingerprint(_tree(tmp_path / "a"))
    moved = _tree(tmp_path / "b", {("fan", "test", "a.wav"): b"aaaa",
                                   ("fan", "test", "b.wav"): b"bbbb"})  # fmt: skip
    renamed = _tree(tmp_path / "c", {("valve", "train", "a.wav"): b"aaaa",
                                     ("valve", "test", "b.wav"): b"bbbb"})  # fmt: skip
    assert len({base, content_fingerprint(moved), content_fingerprint(renamed)}) == 3
    index = _tree(tmp_path / "d")
    assert content_fingerprint(index) == base
    index["split"] = ["train", "test"]  # as the folders say: the same data
    assert content_fingerprint(index) == base
    index["split"] = ["test", "test"]  # a manifest's other split of the same files
    assert content_fingerprint(index) != base


def test_the_store_hashes_an_unchanged_file_once_and_survives_damage(tmp_path):
    index = _tree(tmp_path / "data")
    store = tmp_path / "store.json"
    digests = clip_digests(index["path"], store)
    assert digests == [file_digest(p) for p in index["path"]]
    saved = json.loads(store.read_text())
    assert set(saved) == {os.path.abspath(p) for p in index["path"]}
    by_path = {os.path.abspath(p): d for p, d in zip(index["path"], digests, strict=True)}
    assert all(len(entry) == 5 and entry[4] == by_path[p] for p, entry in saved.items())
    hashes = HashStore(store)
    hashes.digest(index["path"][0])
    assert not hashes.changed  # one stat, no re-hash
    hashes.save()  # nothing new: nothing written
    assert json.loads(store.read_text()) == saved
    store.write_text("{broken")
    assert clip_digests(index["path"], store) == digests  # a broken store costs a re-hash
    assert json.loads(store.read_text()) == saved


def test_a_copied_file_is_rehashed_and_a_missing_one_is_named(tmp_path):
    index = _tree(tmp_path / "data")
    store = tmp_path / "store.json"
    clip_digests(index["path"], store)
    path = index["path"][0]
    shutil.copy(path, path + ".new")
    os.replace(path + ".new", path)  # another inode, same bytes
    hashes = HashStore(store)
    assert hashes.digest(path) == file_digest(path) and hashes.changed
    missing = str(tmp_path / "data" / "gone.wav")
    with pytest.raises(AsdError, match="cannot read .*gone.wav"):
        clip_digests([missing])
    with pytest.raises(AsdError, match="cannot read .*gone.wav"):
        file_digest(missing)


def test_without_a_store_file_it_still_hashes(tmp_path):
    index = _tree(tmp_path)
    assert clip_digests(index["path"], None) == [file_digest(p) for p in index["path"]]
    assert not list(tmp_path.glob("*.json"))
