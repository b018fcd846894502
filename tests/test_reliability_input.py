"""Bad input through the CLI: one line naming the file or setting, exit code 2, no traceback.

Each case copies a tiny synthetic tree (2 machine types, 1 s clips), breaks one thing and runs
the cheapest command that reads it: `asd data index` for names and folders, `asd evaluate
--embedding mean-logmel` (no training) for audio, `asd train --preset smoke` for a short clip.
Odd but usable audio (stereo, another rate, short, long, silent) works, with a logged note
where something was changed.
"""

import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from servers import free_port

from asd.cli import main

SMOKE = str(Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml")
CLIP = "section_00_source_train_normal_0000_m-n_W_spd_1.0.wav"


@pytest.fixture(scope="module")
def pristine(synth_tree):
    root = synth_tree(train_source=6, seed=1)
    assert (root / "dev_data/raw/fan/train" / CLIP).is_file()
    return root


@pytest.fixture
def data(pristine, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(pristine, root)
    return root


def _clip(root):
    return root / "dev_data/raw/fan/train" / CLIP


def _rewrite(root, fn):
    wave, rate = sf.read(_clip(root))
    new_wave, new_rate = fn(wave, rate)
    sf.write(_clip(root), new_wave, new_rate)


def _evaluate(root, tmp_path):
    return [
        "evaluate", "--embedding", "mean-logmel", "--data", str(root),
        "--workdir", str(tmp_path / "work"), "--quiet",
    ]  # fmt: skip


def _fails(capsys, argv, *needles):
    """Run the CLI; assert exit 2 and one stderr line ``asd: ...`` holding every needle."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("asd: "), err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


def _works(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


# --------------------------------------------------------------------------- audio


def test_corrupt_wav_names_the_file(data, tmp_path, capsys):
    _clip(data).write_bytes(b"RIFF not really a wave file" * 8)
    _fails(capsys, _evaluate(data, tmp_path), _clip(data), "cannot read")


def test_zero_byte_file_names_the_file(data, tmp_path, capsys):
    _clip(data).write_bytes(b"")
    _fails(capsys, _evaluate(data, tmp_path), _clip(data), "cannot read")


def test_wav_with_no_samples_names_the_file(data, tmp_path, capsys):
    sf.write(_clip(data), np.zeros(0, np.float32), 16000)
    _fails(capsys, _evaluate(data, tmp_path), _clip(data), "empty audio file")


def test_stereo_clip_is_mixed_down_with_a_note(data, tmp_path, capsys, caplog):
    _rewrite(data, lambda w, r: (np.stack([w, 0.5 * w], axis=1), r))
    with caplog.at_level(logging.WARNING, logger="asd"):
        out = _works(capsys, _evaluate(data, tmp_path))
    assert "official score" in out
    assert any("mixed 2 channels down to mono" in r.message and CLIP in r.message
               for r in caplog.records)  # fmt: skip


def test_other_sample_rate_is_resampled_with_a_note(data, tmp_path, capsys, caplog):
    _rewrite(data, lambda w, r: (w[::2], r // 2))
    with caplog.at_level(logging.WARNING, logger="asd"):
        out = _works(capsys, _evaluate(data, tmp_path))
    assert "official score" in out
    assert any("resampled 8000 Hz to 16000 Hz" in r.message and CLIP in r.message
               for r in caplog.records)  # fmt: skip


def test_much_longer_and_silent_clips_work(data, tmp_path, capsys):
    _rewrite(data, lambda w, r: (np.tile(w, 10), r))  # 10 s among 1 s clips
    other = data / "dev_data/raw/slider/train" / CLIP.replace("m-n_W_spd_1.0", "noAttribute")
    slider = sorted(other.parent.glob("*.wav"))[0]
    wave, rate = sf.read(slider)
    sf.write(slider, np.zeros_like(wave), rate)  # digital silence: floored, still finite
    out = _works(capsys, _evaluate(data, tmp_path))
    assert "official score" in out and "nan" not in out.lower()


def test_a_0_05_s_clip_is_refused_naming_the_file_and_the_setting(data, tmp_path, capsys):
    # Decision: 800 samples cannot fill one n_fft=2048 window; refusing beats padding silence.
    _rewrite(data, lambda w, r: (w[: int(0.05 * r)], r))
    _fails(capsys, _evaluate(data, tmp_path), _clip(data), "features.n_fft=2048", "800 samples")


def test_a_0_5_s_clip_trains_and_evaluates(data, tmp_path, capsys):
    _rewrite(data, lambda w, r: (w[: r // 2], r))  # 16 frames, fewer than a training crop
    run = tmp_path / "run"
    _works(capsys, [
        "train", "--preset", "smoke", "--set", "train.epochs=1", "--data", str(data),
        "--workdir", str(tmp_path / "work"), "--out", str(run), "--quiet",
    ])  # fmt: skip
    assert (run / "encoder.pt").is_file()
    out = _works(capsys, [
        "evaluate", "--encoder", str(run), "--estimator", "ml", "--data", str(data),
        "--workdir", str(tmp_path / "work"), "--quiet",
    ])  # fmt: skip
    assert "official score" in out


# --------------------------------------------------------------------------- the tree


def test_file_name_outside_the_dcase_pattern(data, capsys):
    bad = _clip(data).with_name("recording_0001.wav")
    _clip(data).rename(bad)
    _fails(capsys, ["data", "index", "--data", str(data)], bad, "DCASE pattern")


def test_machine_folder_without_training_clips(data, capsys):
    train = data / "dev_data/raw/fan/train"
    for wav in train.glob("*.wav"):
        wav.unlink()
    _fails(capsys, ["data", "index", "--data", str(data)], "no training clips", train)


def test_data_path_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    _fails(capsys, ["data", "index", "--data", str(missing)], missing)
    _fails(capsys, _evaluate(missing, tmp_path), missing)
    assert not (tmp_path / "work").exists(), "nothing is created for a missing data folder"


def test_section_with_too_few_clips_for_a_covariance(data, tmp_path, capsys):
    wave, rate = sf.read(_clip(data))
    fan = data / "dev_data/raw/fan"
    sf.write(fan / "train/section_01_source_train_normal_0000_noAttribute.wav", wave, rate)
    for label in ("normal", "anomaly"):
        sf.write(fan / f"test/section_01_source_test_{label}_0000_noAttribute.wav", wave, rate)
    _fails(capsys, _evaluate(data, tmp_path), "machine fan section 01", "1 normal train clip")


# --------------------------------------------------------------------------- sweep settings


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ("params:\n  loss.temperatur: {uniform: [0.05, 0.5]}\n", "loss.temperatur"),
        ("params:\n  train.lr: {loguniform: [0.01, 0.01]}\n", "empty range"),
        ("params:\n  augment.n_views: {int: [4, 2]}\n", "augment.n_views"),
        ("colour: blue\n", "colour"),
    ],
)
def test_bad_search_space_fails_before_ray_starts(tmp_path, capsys, space, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(space)
    work = tmp_path / "work"
    began = time.monotonic()
    _fails(capsys, ["sweep", "--space", str(path), "--workdir", str(work)], path, needle)
    assert time.monotonic() - began < 5
    assert not (work / "ray_results").exists() and not (work / "features").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


def test_bad_epoch_hook_fails_before_ray_starts(tmp_path, capsys):
    work = tmp_path / "work"
    for hook, needle in (("no_colon", "module:function"), ("asd.nope:f", "cannot import")):
        argv = [
            "sweep", "--space", SMOKE, "--workdir", str(work),
            "--epoch-hook", hook,
        ]  # fmt: skip
        _fails(capsys, argv, "--epoch-hook", hook, needle)
    assert not (work / "ray_results").exists()


def test_unreachable_mlflow_is_refused_before_any_work(pristine, tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    work = tmp_path / "work"
    argv = ["sweep", "--space", SMOKE, "--data", str(pristine),
            "--workdir", str(work), "--tracking-uri", uri]  # fmt: skip
    _fails(capsys, argv, "cannot reach MLflow", uri)
    assert not (work / "features").exists() and not (work / "ray_results").exists()


def test_credentials_in_a_tracking_uri_never_reach_the_terminal(pristine, tmp_path, capsys):
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    argv = ["sweep", "--space", SMOKE, "--data", str(pristine),
            "--workdir", str(tmp_path / "work"), "--tracking-uri", uri]  # fmt: skip
    err = _fails(capsys, argv, "cannot reach MLflow", "alice:***@127.0.0.1")
    assert "s3cret" not in err
