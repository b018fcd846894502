"""The feature cache never answers for other bytes, survives corruption and killed writers.

Issue 10 items 1 (a stale cache gave wrong scores with exit code 0) and 8 (a corrupt cache
gave tracebacks, the index was a pickle, a killed extraction left its temporary folder).
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asd import features
from asd.cli.main import main
from asd.config import FeatureConfig
from asd.data import fingerprint
from asd.data.index import index_dataset
from asd.data.synth.tree import synthesize
from asd.features import extract_features
from asd.staging import HOST

pytestmark = pytest.mark.usefixtures("cli_environment")  # it runs `asd` in-process

CFG = FeatureConfig(n_mels=32)


@pytest.fixture(scope="module")
def pristine(synth_tree):
    return synth_tree(machines=("fan",), train_source=6, seed=3)


@pytest.fixture
def data(pristine, writable_copy):
    return writable_copy(pristine)


def _fresh(root, tmp_path):
    """Features computed from scratch (a cache folder nobody used before)."""
    return extract_features(index_dataset(root), CFG, tmp_path / "fresh-cache", progress=False)


def _official(capsys, root, work):
    argv = ["evaluate", "--embedding", "mean-logmel", "--estimator", "ml", "--data", str(root),
            "--workdir", str(work), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("official score")]
    return line


# --------------------------------------------------------------------------- item 1


def test_clips_rewritten_in_place_at_the_same_size_are_read_again(data, tmp_path, capsys):
    work = tmp_path / "work"
    before = _official(capsys, data, work)
    anomalies = sorted((data / "dev_data/raw/fan/test").glob("*anomaly*.wav"))
    for path in anomalies:
        size = path.stat().st_size
        wave, rate = sf.read(path, dtype="float32")
        sf.write(path, 0.01 * wave, rate)  # same subtype as before: same size
        assert path.stat().st_size == size
    after = _official(capsys, data, work)
    truth = _official(capsys, data, tmp_path / "other-work")
    assert after == truth, (before, after, truth)
    assert after != before


def test_a_copy_with_other_bytes_at_another_path_misses_the_cache(data, pristine, tmp_path):
    cache = tmp_path / "cache"
    first = extract_features(index_dataset(data), CFG, cache, progress=False)
    other = tmp_path / "other"
    synthesize(other, machines=("fan",), train_source=6, train_target=2, test_per_domain=2,
               seconds=1.0, seed=4)  # same names and sizes, other sounds  # fmt: skip
    second = extract_features(index_dataset(other), CFG, cache, progress=False)
    truth = _fresh(other, tmp_path)
    np.testing.assert_array_equal(np.asarray(second.mel), np.asarray(truth.mel))
    assert not np.array_equal(np.asarray(second.mel), np.asarray(first.mel))


def test_same_bytes_at_another_path_hit_the_cache_and_report_the_new_paths(data, tmp_path):
    cache = tmp_path / "cache"
    extract_features(index_dataset(data), CFG, cache, progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    hit = extract_features(index_dataset(moved), CFG, cache, progress=False)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    assert all(p.startswith(str(moved)) for p in hit.index["path"])


def test_a_hit_on_unchanged_files_reads_no_audio_bytes(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    index = index_dataset(data)
    extract_features(index, CFG, cache, progress=False)

    def no_read(path):
        raise AssertionError(f"unchanged file re-hashed: {path}")

    monkeypatch.setattr(fingerprint, "file_digest", no_read)
    monkeypatch.setattr(features.data, "read_wav", no_read)
    assert len(extract_features(index, CFG, cache, progress=False)) == len(index)


# --------------------------------------------------------------------------- item 8


def _only_cache(cache):
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    return folder


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("index.json", b"\x80\x04garbage"),
        ("index.json", b""),
        ("meta.json", b"{}"),
        ("mel.npy", None),  # truncated to half
        ("mel.npy", b""),  # zero bytes (a full disk): was EOFError on every later run
        ("mel.npy", b"\x93NUMPY"),  # a header cut short
    ],
)
def test_a_corrupt_cache_is_reported_and_rebuilt(data, tmp_path, caplog, name, content):
    cache = tmp_path / "cache"
    index = index_dataset(data)
    good = extract_features(index, CFG, cache, progress=False)
    expected = np.array(good.mel)
    target = _only_cache(cache) / name
    if content is None:
        content = target.read_bytes()[: target.stat().st_size // 2]
    target.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="asd"):
        rebuilt = extract_features(index, CFG, cache, progress=False)
    np.testing.assert_array_equal(np.asarray(rebuilt.mel), expected)
    (warning,) = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert "is corrupt" in warning and "rebuilding" in warning and name in warning, warning


def test_a_zero_byte_mel_is_one_error_naming_the_file_for_a_reader(data, tmp_path):
    cache = tmp_path / "cache"
    extract_features(index_dataset(data), CFG, cache, progress=False)
    folder = _only_cache(cache)
    (folder / "mel.npy").write_bytes(b"")
    with pytest.raises(features.AsdError, match="mel.npy") as err:
        features.load_features(folder)  # what a trial does with the sweep's cache
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_the_cache_index_is_never_unpickled(data, tmp_path):
    cache = tmp_path / "cache"
    index = index_dataset(data)
    extract_features(index, CFG, cache, progress=False)
    folder = _only_cache(cache)
    assert not list(folder.glob("*.pkl"))
    json.loads((folder / "index.json").read_text())  # plain data
    marker = tmp_path / "pwned"
    # A pickle that would create `marker` if anything loaded it.
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (folder / "index.pkl").write_bytes(payload)
    extract_features(index, CFG, cache, progress=False)
    assert not marker.exists()


def test_temporary_folders_of_dead_writers_are_removed(data, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = cache / f".tmp-abc-{HOST}-{dead.pid}-00000000"
    alive = cache / f".tmp-abc-{HOST}-{os.getpid()}-00000000"
    for folder in (stale, alive):
        folder.mkdir()
        (folder / "mel.npy").write_bytes(b"\0" * 100)
    extract_features(index_dataset(data), CFG, cache, progress=False)
    assert not stale.exists() and alive.exists()


EXTRACT = """
import sys
from asd.config import FeatureConfig
from asd.data.index import index_dataset
from asd.features import extract_features
extract_features(index_dataset(sys.argv[1]), FeatureConfig(n_mels=32), sys.argv[2])
"""


def test_an_extraction_killed_with_sigterm_leaves_nothing_behind(tmp_path):
    data = tmp_path / "big"
    synthesize(data, machines=("fan",), train_source=60, train_target=2, test_per_domain=4,
               seconds=10.0, seed=1)  # fmt: skip
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", EXTRACT, str(data), str(cache)],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(cache.glob(".tmp-*/mel.npy")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the extraction finished before the signal")
    assert list(cache.glob(".tmp-*")), "the killed writer left its folder (the fault)"
    extract_features(index_dataset(data), FeatureConfig(n_mels=32), cache, progress=False)
    assert not list(cache.glob(".tmp-*"))


def test_the_cache_hit_benchmark_runs_at_toy_size(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import cache as bench

    assert bench.main(["--clips", "8", "--seconds", "0.5", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| cache hit (index + stat + store + load) |" in out


def test_index_verify_finds_a_clip_edited_behind_a_restored_mtime(data, tmp_path, capsys):
    work = tmp_path / "work"
    line = _official(capsys, data, work)
    clip = sorted((data / "dev_data/raw/fan/test").glob("*anomaly*.wav"))[0]
    stat = clip.stat()
    wave, rate = sf.read(clip, dtype="int16")
    sf.write(clip, wave // 4, rate, subtype="PCM_16")  # 12 dB quieter, same size
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what `touch -r` does
    assert clip.stat().st_size == stat.st_size
    assert _official(capsys, data, work) == line  # the store trusts size and mtime (README)
    argv = ["data", "index", "--data", str(data), "--workdir", str(work), "--verify"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"1 of {len(index_dataset(data))} clips changed" in out and clip.name in out, out
    assert main(argv) == 0
    assert "every one matches" in capsys.readouterr().out
    fresh = _official(capsys, data, tmp_path / "fresh")
    assert fresh != line
    assert _official(capsys, data, work) == fresh  # the next run read the edited clip
