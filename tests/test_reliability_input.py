"""Bad input through the CLI: one line naming the file or setting, exit code 2, no traceback.

Each case copies a tiny synthetic tree (2 machine types, 1 s clips), breaks one thing and runs
the cheapest command that reads it: `asd data index` for names and folders, `asd evaluate
--embedding mean-logmel` (no training) for audio, `asd train --preset smoke` for a short clip.
Odd but usable audio (stereo, another rate, short, long, silent) works, with a logged note
where something was changed.
"""

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from servers import free_port

from asd.cli.main import main

pytestmark = pytest.mark.usefixtures("cli_environment")  # it runs `asd` in-process

SMOKE = str(Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml")
CLIP = "section_00_source_train_normal_0000_m-n_W_spd_1.0.wav"


@pytest.fixture(scope="module")
def pristine(synth_tree):
    root = synth_tree(train_source=6, seed=1)
    assert (root / "dev_data/raw/fan/train" / CLIP).is_file()
    return root


@pytest.fixture
def data(pristine, writable_copy):
    return writable_copy(pristine)


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


def test_stereo_clip_gives_its_first_channel_with_a_note(data, tmp_path, capsys, caplog):
    _rewrite(data, lambda w, r: (np.stack([w, 0.5 * w], axis=1), r))
    with caplog.at_level(logging.WARNING, logger="asd"):
        out = _works(capsys, _evaluate(data, tmp_path))
    assert "official score" in out
    assert any("used channel 0 of 2" in r.message and CLIP in r.message
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
    _fails(capsys, ["sweep", "--space", str(path), "--workdir", str(work)], path, needle)
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


# --------------------------------------------------------------------------- run folders


def _train(data, tmp_path, out, *extra):
    return [
        "train", "--preset", "smoke", "--set", "train.epochs=1", "--data", str(data),
        "--workdir", str(tmp_path / "work"), "--out", str(out), "--quiet", *extra,
    ]  # fmt: skip


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def test_train_onto_a_run_of_other_data_or_config_is_refused_before_writing(data, tmp_path, capsys):
    run = tmp_path / "run"
    _works(capsys, _train(data, tmp_path, run))
    before = _snapshot(run)
    _rewrite(data, lambda w, r: (0.5 * w, r))  # same names and sizes, other bytes
    _fails(capsys, _train(data, tmp_path, run), run, "trained on other data", "--overwrite")
    _fails(capsys, _train(data, tmp_path, run, "--resume"), "other data")
    _fails(capsys, _train(data, tmp_path, run, "--set", "loss.temperature=0.2"),
           "config differs in loss.temperature")  # fmt: skip
    assert _snapshot(run) == before, "nothing in the run folder was touched"
    out = _works(capsys, _train(data, tmp_path, run, "--overwrite"))
    assert "resumed" not in out
    saved = json.loads((run / "run.json").read_text())
    assert saved["data_fingerprint"] != json.loads(before["run.json"])["data_fingerprint"]


def test_train_resumes_only_the_same_run_and_resume_needs_one(data, tmp_path, capsys):
    run = tmp_path / "run"
    _fails(capsys, _train(data, tmp_path, run, "--resume"), "nothing to resume", run)
    _works(capsys, _train(data, tmp_path, run))
    out = _works(capsys, _train(data, tmp_path, run, "--resume"))
    assert out.startswith("resumed")


def test_every_set_applies_on_every_subcommand():
    from asd.cli.main import build_parser, config_from_args

    args = build_parser().parse_args(
        ["train", "--data", "d", "--set", "train.epochs=1", "--set", "loss.temperature=0.2",
         "--machines", "fan", "--machines", "slider"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.train.epochs, cfg.loss.temperature) == (1, 0.2)
    assert args.machines == ["fan", "slider"]
    sweep = build_parser().parse_args(
        ["sweep", "--tune-machines", "fan", "--tune-machines", "slider",
         "--holdout-machines", "valve", "--holdout-machines", "gearbox"]
    )  # fmt: skip
    assert sweep.tune_machines == ["fan", "slider"]
    assert sweep.holdout_machines == ["valve", "gearbox"]


def test_a_second_train_into_a_folder_in_use_is_refused(data, tmp_path, capsys):
    from asd.cli.runfolder import run_folder

    run = tmp_path / "run"
    with run_folder(run, {"x": 1}, "fp"):  # another `asd train` holds it
        _fails(capsys, _train(data, tmp_path, run), run, "in use by another asd train")
    assert json.loads((run / "run.json").read_text())["config"] == {"x": 1}


# --------------------------------------------------------------------------- impossible settings


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("loss.temperature=Infinity", "loss.temperature must be a finite number"),
        ("train.lr=NaN", "train.lr must be a finite number"),
        ("train.lr_min=0.9", "train.lr_min must be between 0 and train.lr"),
        ("train.grad_clip=-1", "train.grad_clip must be >= 0"),
        ("encoder.head_hidden_dim=0", "encoder.head_hidden_dim must be positive"),
        ("features.f_max=12000", "features.f_max must not exceed Nyquist"),
        ("features.n_fft=0", "features.n_fft must be at least 16"),
        ("features.n_fft=1", "features.n_fft must be at least 16"),
        ("features.n_fft=64", "features.n_mels=128 exceeds the 33 frequency bins"),
        ("features.sample_rate=0", "features.sample_rate must be positive"),
    ],
)
def test_settings_that_validate_but_cannot_work_are_refused(
    data, tmp_path, capsys, setting, needle
):
    _fails(capsys, _train(data, tmp_path, tmp_path / "run", "--set", setting), needle)
    assert not (tmp_path / "run").exists()


def test_a_hop_longer_than_a_clip_names_the_setting_and_the_clip(data, tmp_path, capsys):
    run = tmp_path / "run"
    argv = _train(data, tmp_path, run, "--set", "features.hop_length=20000")
    _fails(capsys, argv, "features.hop_length=20000", "longer than clip", ".wav")
    assert not run.exists()  # a refused run leaves no folder behind


def test_synth_takes_an_explicit_zero_as_zero(tmp_path, capsys):
    out = tmp_path / "synth"
    base = ["data", "synth", "--out", str(out), "--machines", "fan", "--train-source", "2",
            "--test-per-domain", "1", "--seconds", "0.2"]  # fmt: skip
    _works(capsys, [*base, "--train-target", "0"])
    assert not list((out / "dev_data/raw/fan/train").glob("*_target_*"))
    _fails(capsys, [*base[:-2], "--seconds", "0", "--out", str(tmp_path / "x")], "seconds > 0")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("description: caf\xe9\n".encode("latin-1"), "not UTF-8"),
        (b"fixed:\n  - train.epochs\n", "fixed: needs a mapping"),
        (b"params:\n  - train.lr\n", "params: needs a mapping"),
        (b"", "is empty"),
        (b"# only a comment\n", "is empty"),
        (b"fixed:\n  train.epochs: 1\n  train.epochs: 2\n", "duplicate key 'train.epochs'"),
        (b"fixed: {}\nfixed: {train.epochs: 1}\n", "duplicate key 'fixed'"),
    ],
)
def test_broken_search_space_files_get_one_line(tmp_path, capsys, content, needle):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    _fails(capsys, ["sweep", "--space", str(path), "--workdir", str(tmp_path / "w")], path, needle)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--max-concurrent", "-1"], "--max-concurrent -1: must be >= 1"),
        (["--max-concurrent", "0"], "--max-concurrent 0: must be >= 1"),
        (["--num-samples", "-3"], "--num-samples -3: must be >= 1"),
        (["--num-samples", "0"], "--num-samples 0: must be >= 1"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial 0.0: must be > 0"),
        (["--max-failures", "-5"], "--max-failures -5: must be >= 0"),
        (["--name", "../../escaped"], "a sweep name is letters"),
        (["--name", "a/b"], "no path separators"),
        (["--name", "a" * 250], "--name is 250 characters long: a sweep name has at most 128"),
        (["--tracking-uri", "ftp://x"], "unsupported scheme 'ftp'"),
        (["--tracking-uri", "http://[::1"], "not a valid URI"),
        (["--tracking-uri", "not-a-uri"], "unsupported scheme ''"),
    ],
)
def test_bad_sweep_flags_are_refused_before_anything_starts(tmp_path, capsys, flags, needle):
    work = tmp_path / "work"
    _fails(capsys, ["sweep", "--space", SMOKE, "--workdir", str(work), *flags], needle)
    assert not work.exists(), "nothing was created: no folder, no database, no MLflow run"
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


def test_promote_and_models_uris_need_an_existing_store(tmp_path, capsys):
    missing = tmp_path / "nowhere.db"
    uri = f"sqlite:///{missing}"
    _fails(capsys, ["promote", "--version", "1", "--tracking-uri", uri], "no MLflow store", missing)
    argv = ["evaluate", "--encoder", "models:/asd-encoder@champion", "--tracking-uri", uri,
            "--data", str(tmp_path), "--workdir", str(tmp_path / "work")]  # fmt: skip
    _fails(capsys, argv, "no MLflow store", missing)
    assert not missing.exists()


# --------------------------------------------------------------------------- odd files in the tree


def test_a_broken_symlink_clip_names_the_file(data, capsys):
    link = _clip(data).with_name(CLIP.replace("0000", "0099"))
    link.symlink_to(data / "nowhere.wav")
    _fails(capsys, ["data", "index", "--data", str(data)], "broken link", link)


def test_a_folder_named_like_a_clip_names_it(data, capsys):
    folder = _clip(data).with_name(CLIP.replace("0000", "0099"))
    folder.mkdir()
    _fails(capsys, ["data", "index", "--data", str(data)], folder, "is not a file")


def test_upper_case_wav_files_are_clips_too(data, tmp_path, capsys):
    from asd.data.index import index_dataset

    before = len(index_dataset(data))
    _clip(data).rename(_clip(data).with_suffix(".WAV"))
    index = index_dataset(data)
    assert len(index) == before and index["clip"].str.endswith(".WAV").sum() == 1
    assert "official score" in _works(capsys, _evaluate(data, tmp_path))


def test_a_train_clip_in_the_test_folder_is_refused(data, capsys):
    moved = data / "dev_data/raw/fan/test" / CLIP.replace("0000", "0099")
    shutil.copy(_clip(data), moved)
    _fails(capsys, ["data", "index", "--data", str(data)], "train clip in a test folder", moved)


def test_the_same_clip_name_in_train_and_test_is_refused(data, capsys):
    fan = data / "dev_data/raw/fan"
    wave, rate = sf.read(_clip(data))
    for split in ("train", "test"):
        sf.write(fan / split / "section_00_0001.wav", wave, rate)
    _fails(capsys, ["data", "index", "--data", str(data)], "section_00_0001.wav", "in both")


# --------------------------------------------------------------------------- odd samples


def test_nan_samples_are_refused_at_read_time_naming_the_file(data, tmp_path, capsys):
    wave, rate = sf.read(_clip(data), dtype="float32")
    wave[100] = np.nan
    wave[200] = np.inf
    sf.write(_clip(data), wave, rate, subtype="FLOAT")
    _fails(capsys, _evaluate(data, tmp_path), _clip(data), "2 NaN or infinite samples")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda w, r: (w[:200], 1), "header sample rate 1 Hz makes it 200 s long"),
        (lambda w, r: (np.full_like(w, 0.25), r), "constant (DC-only) signal"),
        (lambda w, r: (w * 1.0e6, r), "samples reach"),
        (lambda w, r: (np.clip(w * 30, -1, 1), r), "% of samples at full scale: a clipped"),
    ],
)
def test_implausible_clips_are_read_with_a_warning_naming_the_file(tmp_path, caplog, make, needle):
    from asd.data.index import read_wav

    wave = np.sin(np.arange(16000) / 7.0).astype(np.float32) * 0.1
    new_wave, rate = make(wave, 16000)
    path = tmp_path / "odd.wav"
    sf.write(path, new_wave, rate, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="asd"):
        read_wav(path, 16000)
    assert any(needle in r.message and str(path) in r.message for r in caplog.records), [
        r.message for r in caplog.records
    ]


def test_a_clean_loud_clip_is_not_called_clipped(tmp_path, caplog):
    from asd.data.index import read_wav

    path = tmp_path / "loud.wav"
    sf.write(path, np.sin(np.arange(16000) / 7.0).astype(np.float32) * 0.999, 16000)
    with caplog.at_level(logging.WARNING, logger="asd"):
        read_wav(path, 16000)
    assert not [r.message for r in caplog.records if "clipped" in r.message]


def test_mixed_rate_data_warns_once_per_machine_type_not_per_file(data, tmp_path, caplog):
    from asd.data.index import read_wav

    clips = sorted((data / "dev_data/raw/fan/train").glob("*.wav"))[:4]
    clips += sorted((data / "dev_data/raw/slider/train").glob("*.wav"))[:2]
    for clip in clips:
        wave, rate = sf.read(clip)
        sf.write(clip, wave[::2], rate // 2)
    with caplog.at_level(logging.WARNING, logger="asd"):
        for clip in clips:
            read_wav(clip, 16000)
    notes = [r.message for r in caplog.records if "resampled 8000 Hz" in r.message]
    assert len(notes) == 2, notes
    assert "fan" in notes[0] and "slider" in notes[1]


# --------------------------------------------------------------------------- outputs


def test_a_failed_evaluate_leaves_no_outputs(data, tmp_path, capsys):
    for wav in (data / "dev_data/raw/fan/test").glob("*anomaly*.wav"):
        wav.unlink()  # fan section 00 has no anomalies: no AUC
    out = tmp_path / "out"
    code = main([*_evaluate(data, tmp_path), "--out", str(out)])
    capsys.readouterr()
    assert code == 2
    assert not out.exists() and not list(tmp_path.glob(".tmp-*")), list(tmp_path.iterdir())


def _unwritable(tmp_path):
    """A folder this process cannot write in (root ignores modes: use a read-only mount)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def test_evaluate_out_under_a_file_or_an_unwritable_folder_is_refused_before_work(
    data, tmp_path, capsys, caplog
):
    (tmp_path / "a-file").write_text("x")
    for out in (tmp_path / "a-file" / "out", _unwritable(tmp_path) / "asd-out"):
        with caplog.at_level(logging.INFO):
            _fails(capsys, [*_evaluate(data, tmp_path), "--out", str(out)], "--out", str(out))
        assert not any("log-mel" in r.message for r in caplog.records)  # before the work
        assert not (tmp_path / "work").exists()


def test_a_refused_train_leaves_no_run_folder(data, tmp_path, capsys):
    run = tmp_path / "runs" / "new"
    _fails(capsys, _train(data, tmp_path, run, "--set", "features.hop_length=20000"), "hop")
    assert not (tmp_path / "runs").exists()
    run.mkdir(parents=True)  # an empty folder given by the user stays, and stays empty
    _fails(capsys, _train(data, tmp_path, run, "--set", "features.hop_length=20000"), "hop")
    assert run.is_dir() and not list(run.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line_and_leaves_nothing(data, tmp_path, capsys):
    run = tmp_path / "run"
    _fails(capsys, _train(data, tmp_path, run, "--device", "cuda"), "cuda", "no CUDA GPU")
    assert not run.exists()
    _fails(capsys, [*_evaluate(data, tmp_path), "--device", "cuda"], "cuda", "no CUDA GPU")


def test_a_device_torch_does_not_know_or_a_missing_gpu_index_is_one_line(data, tmp_path, capsys):
    run = tmp_path / "run"
    _fails(capsys, _train(data, tmp_path, run, "--device", "gpu0"), "unknown device 'gpu0'")
    beyond = f"cuda:{torch.cuda.device_count() + 3}"
    _fails(capsys, _train(data, tmp_path, run, "--device", beyond), beyond)
    assert not run.exists()


def test_evaluate_out_writes_every_file_on_success(data, tmp_path, capsys):
    out = tmp_path / "out"
    _works(capsys, [*_evaluate(data, tmp_path), "--out", str(out)])
    assert (out / "ml" / "scores.csv").is_file() and not list(tmp_path.glob(".tmp-*"))


@pytest.fixture(scope="module")
def encoder(pristine, tmp_path_factory):
    run = tmp_path_factory.mktemp("encoder")
    argv = ["train", "--preset", "smoke", "--set", "train.epochs=1", "--data", str(pristine),
            "--workdir", str(run / "work"), "--out", str(run / "run"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return run / "run"


def _score(pristine, encoder, tmp_path, files, *extra):
    return ["score", *map(str, files), "--encoder", str(encoder), "--machine", "fan",
            "--data", str(pristine), "--workdir", str(tmp_path / "work"), "--quiet",
            *extra]  # fmt: skip


def test_score_out_that_is_a_folder_is_refused_before_the_work(pristine, encoder, tmp_path,
                                                                capsys, monkeypatch):  # fmt: skip
    import asd.detect.pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("scored before checking --out")

    monkeypatch.setattr(asd.detect.pipeline, "score_new_clips", no_work)
    clips = pristine / "dev_data/raw/fan/test"
    argv = _score(pristine, encoder, tmp_path, [clips], "--out", str(tmp_path))
    _fails(capsys, argv, "--out", str(tmp_path), "is a folder")


def test_scoring_another_machine_types_clips_warns(pristine, encoder, tmp_path, capsys, caplog):
    slider = pristine / "dev_data/raw/slider/test"
    with caplog.at_level(logging.WARNING, logger="asd"):
        _works(capsys, _score(pristine, encoder, tmp_path, [slider]))
    messages = [r.message for r in caplog.records]
    assert any("folders of machine type slider" in m and "scored as fan" in m for m in messages)
    neutral = tmp_path / "incoming"
    shutil.copytree(slider, neutral)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asd"):
        out = _works(capsys, _score(pristine, encoder, tmp_path, [neutral]))
    assert f"{len(list(neutral.iterdir()))} of" in out
    assert any("are they fan clips" in r.message for r in caplog.records), (out, messages)


def test_scoring_the_machines_own_normal_clips_does_not_warn(pristine, encoder, tmp_path,
                                                            capsys, caplog):  # fmt: skip
    own = tmp_path / "incoming"
    own.mkdir()
    for clip in (pristine / "dev_data/raw/fan/test").glob("*_normal_*.wav"):
        shutil.copy(clip, own)
    with caplog.at_level(logging.WARNING, logger="asd"):
        out = _works(capsys, _score(pristine, encoder, tmp_path, [own]))
    assert f"of {len(list(own.iterdir()))} clips flagged" in out
    messages = [r.message for r in caplog.records]
    assert [m for m in messages if "scored as" in m or "are they" in m] == []
