"""The `asd` commands a user runs first: synth, index, train, evaluate (tiny sizes)."""

import argparse
import re

import pytest

from asd.cli.main import main

pytestmark = pytest.mark.usefixtures("cli_environment")  # it runs `asd` in-process

TINY = [
    "train.epochs=1",
    "train.batch_size=4",
    "train.crop_frames=16",
    "augment.n_views=1",
    "features.n_mels=32",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "data"
    code = main(
        [
            "data",
            "synth",
            "--out",
            str(root),
            "--machines",
            "fan",
            "valve",
            "--train-source",
            "8",
            "--train-target",
            "2",
            "--test-per-domain",
            "3",
            "--seconds",
            "1",
            "--seed",
            "5",
        ]
    )
    assert code == 0
    return root


def test_synth_writes_the_dcase_layout(data):
    for machine in ("fan", "valve"):
        train = sorted((data / "dev_data" / "raw" / machine / "train").glob("*.wav"))
        test = sorted((data / "dev_data" / "raw" / machine / "test").glob("*.wav"))
        assert len(train) == 10 and len(test) == 12
        assert train[0].name.startswith("section_00_source_train_normal_0000")


def test_index_prints_counts_and_writes_csv(data, tmp_path, capsys):
    out = tmp_path / "index.csv"
    assert main(["data", "index", "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fan" in printed and "valve" in printed
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 2 * (10 + 12)
    assert lines[0].startswith("path,subset,machine,section,domain,split,label,clip,attributes")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    run = work / "run"
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--workdir",
            str(work),
            "--preset",
            "smoke",
            "--set",
            *TINY,
            "--out",
            str(run),
            "--quiet",
        ]
    )
    assert code == 0
    return work, run


def evaluate(data, work, run, *flags):
    """`asd evaluate` of the trained encoder on the tiny set; returns the exit code."""
    return main(
        ["evaluate", "--data", str(data), "--workdir", str(work), "--encoder", str(run),
         "--quiet", *flags]
    )  # fmt: skip


def score(data, work, run, clips, *flags):
    """`asd score` of ``clips`` (a folder or a file) as fan clips; returns the exit code."""
    return main(
        ["score", str(clips), "--encoder", str(run), "--machine", "fan", "--data", str(data),
         "--workdir", str(work), "--quiet", *flags]
    )  # fmt: skip


def test_train_saves_encoder_config_and_history(trained):
    _, run = trained
    assert (run / "encoder.pt").stat().st_size > 0
    assert '"features.n_mels": 32' in (run / "config.json").read_text()
    assert len((run / "history.csv").read_text().splitlines()) == 2
    assert (run / "checkpoints" / "last.pt").exists()


def test_evaluate_prints_both_estimators_and_writes_submission(data, trained, tmp_path, capsys):
    work, run = trained
    out = tmp_path / "eval"
    code = evaluate(data, work, run, "--estimator", "both", "--out", str(out))
    assert code == 0
    printed = capsys.readouterr().out
    assert "estimator ml (EmpiricalCovariance)" in printed
    assert "estimator elliptic (EllipticEnvelope)" in printed
    assert printed.count("official score") == 2
    # issue 9: the untrained reference is scored beside the encoder, with the difference
    assert "beside the untrained reference" in printed
    versus = printed.split("beside the untrained reference")[1].splitlines()[2:4]
    assert [line.split()[0] for line in versus] == ["ml", "elliptic"]
    assert (out / "reference" / "ml" / "scores.csv").is_file()
    for estimator in ("ml", "elliptic"):
        for machine in ("fan", "valve"):
            scores = out / estimator / f"anomaly_score_{machine}_section_00_test.csv"
            decisions = out / estimator / f"decision_result_{machine}_section_00_test.csv"
            rows = scores.read_text().splitlines()
            assert len(rows) == 12 and rows[0].count(",") == 1
            assert {r.split(",")[1] for r in decisions.read_text().splitlines()} <= {"0", "1"}
        assert (out / estimator / "roc.png").stat().st_size > 0


def test_evaluate_reference_needs_no_encoder(data, tmp_path, capsys):
    code = main(
        ["evaluate", "--data", str(data), "--workdir", str(tmp_path), "--embedding", "mean-logmel",
         "--estimator", "ml", "--quiet"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "untrained: logmel/mean/ml" in printed and "ref m+s" in printed
    argv = ["evaluate", "--data", str(data), "--workdir", str(tmp_path), "--quiet"]
    assert main([*argv, "--embedding", "mean-std-logmel", "--estimator", "knn"]) == 0
    printed = capsys.readouterr().out
    assert "untrained: logmel/meanstd/ml" in printed and "cosine kNN" in printed
    pooled = [*argv, "--embedding", "logmel", "--pool", "max", "--estimator", "gmm"]
    assert main(pooled) == 0
    assert "logmel/max/ml" in capsys.readouterr().out
    members = [*argv, "--members", "logmel/meanstd,logmel/max", "--estimator", "ml"]
    assert main(members) == 0
    printed = capsys.readouterr().out
    assert "max of z over logmel/meanstd/ml, logmel/max/ml" in printed
    assert "member logmel/max" in printed


def test_config_overrides_are_validated_before_work(data, tmp_path, capsys):
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--workdir",
            str(tmp_path),
            "--set",
            "loss.tau=0.1",
            "--quiet",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asd: unknown config key 'loss.tau'") and "\n" not in err
    assert not (tmp_path / "features").exists()


def test_score_new_clips_agrees_with_evaluate(data, trained, tmp_path):
    import pandas as pd

    work, run = trained
    assert evaluate(data, work, run, "--estimator", "ml", "--out", str(tmp_path / "eval")) == 0
    evaluated = pd.read_csv(tmp_path / "eval" / "ml" / "scores.csv")
    evaluated = evaluated[evaluated["machine"] == "fan"].set_index("clip")["anomaly_score"]
    out = tmp_path / "scored.csv"
    assert (
        score(data, work, run, data / "dev_data" / "raw" / "fan" / "test", "--out", str(out)) == 0
    )
    scored = pd.read_csv(out)
    scored["clip"] = scored["path"].map(lambda p: p.rsplit("/", 1)[-1])
    scored = scored.set_index("clip")["anomaly_score"]
    assert len(scored) == 12
    # Same clips, same encoder, same scorer: only the float16 feature cache differs.
    pd.testing.assert_series_equal(
        scored.sort_index(), evaluated.sort_index(), check_names=False, rtol=0.02
    )


def test_score_rejects_missing_files(data, trained, tmp_path, capsys):
    work, run = trained
    assert score(data, work, run, tmp_path / "nope.wav") == 2
    assert "nope.wav does not exist" in capsys.readouterr().err


def test_evaluate_can_score_on_either_vector_of_the_same_weights(data, trained, tmp_path):
    import pandas as pd

    work, run = trained
    scores = {}
    for where in ("backbone", "projection"):
        out = tmp_path / where
        flags = ("--estimator", "ml", "--embed-from", where, "--out", str(out))
        code = evaluate(data, work, run, *flags)
        assert code == 0
        scores[where] = pd.read_csv(out / "ml" / "scores.csv")["anomaly_score"].to_numpy()
    assert len(scores["backbone"]) == len(scores["projection"])
    assert not (scores["backbone"] == scores["projection"]).all()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_works_before_or_after_the_subcommand(where, tmp_path):
    from asd.cli.main import build_parser

    argv = ["data", "index", "--data", str(tmp_path)]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert build_parser().parse_args(argv).debug is True
    assert build_parser().parse_args(argv[1:] if where == "before" else argv[:-1]).debug is False


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    from asd.errors import AsdError

    with pytest.raises(AsdError, match="nonesuch"):
        main(["sweep", "--space", "nonesuch", "--workdir", str(tmp_path), "--debug"])


def test_sweep_help_shows_defaults_and_two_examples(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    assert "(default: asd-work)" in text and "(default: smoke)" in text
    assert "(default: 1)" in text  # --max-failures
    examples = text.split("examples:", 1)[1]
    assert examples.count("asd sweep ") == 2
    for flag in ("--verbose", "--dashboard", "--storage-path", "s3://"):
        assert flag in text


def test_space_by_name_works_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # A typo fails in one line, naming the shipped spaces; a shipped name gets past the space.
    assert main(["sweep", "--space", "defualt", "--workdir", str(tmp_path / "w")]) == 2
    assert "shipped spaces: default, paper, smoke" in capsys.readouterr().err
    code = main(
        ["sweep", "--space", "default", "--workdir", str(tmp_path / "w"),
         "--tracking-uri", "http://127.0.0.1:9", "--name", "x"]
    )  # fmt: skip
    assert code == 2
    assert "cannot reach MLflow" in capsys.readouterr().err  # the space itself loaded


def test_every_sweep_setting_is_a_flag_documented_by_its_field(capsys):
    """The flags come from SweepSettings: a new field gets a flag, its docstring the help."""
    from dataclasses import fields

    from asd.cli.platform import NOT_FLAGS, field_docs, flag_help
    from asd.sweep.settings import SweepSettings

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    docs = field_docs(SweepSettings)
    for item in fields(SweepSettings):
        assert item.name in docs, f"SweepSettings.{item.name} has no docstring"
        if item.name not in NOT_FLAGS:
            assert flag_help(docs[item.name]) in text
    assert "(default: 0)" in text  # --seed: a zero default is shown too
    assert "cuda:1 ..." in text  # an ellipsis keeps its dots


def test_sweep_flags_build_the_settings_they_name():
    from pathlib import Path

    from asd.cli.main import build_parser
    from asd.cli.platform import sweep_settings
    from asd.config import DEFAULT_WORKDIR
    from asd.sweep.settings import SweepSettings

    argv = ["sweep", "--space", "x.yaml", "--data", "d", "--max-concurrent", "2",
            "--system-metrics-interval", "0", "--gpus-per-trial", "0.5", "--resume",
            "--tune-machines", "fan", "valve", "--epoch-hook", "m:f"]  # fmt: skip
    args = build_parser().parse_args(argv)
    args.argv = argv
    got = sweep_settings(args)
    assert got.space == "x.yaml" and got.data == Path("d")
    assert (got.max_concurrent_trials, got.system_metrics_s, got.gpus_per_trial) == (2, 0.0, 0.5)
    assert got.resume and not got.promote and got.tune_machines == ("fan", "valve")
    assert got.epoch_hook == "m:f" and got.command == "asd " + " ".join(argv)
    plain = sweep_settings(build_parser().parse_args(["sweep"]))
    assert plain.workdir == DEFAULT_WORKDIR == SweepSettings.workdir
    assert (plain.max_failures, plain.holdout_machines, plain.space) == (1, None, "smoke")


def test_job_argv_takes_data_and_workdir_from_the_environment():
    from pathlib import Path

    from asd.cli.platform import job_argv

    env = {"ASD_DATA": "/data", "ASD_WORKDIR": "/shared/w"}
    assert job_argv(["--name", "n"], env) == [
        "sweep", "--name", "n", "--data", "/data", "--workdir", "/shared/w"
    ]  # fmt: skip
    assert job_argv(["--data", "d", "--workdir", "w"], env) == [
        "sweep", "--data", "d", "--workdir", "w"
    ]  # fmt: skip
    assert job_argv([], {}) == ["sweep", "--workdir", str(Path.home() / "asd-work")]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_preset_help_lists_every_preset(command):
    from asd.cli.main import build_parser
    from asd.presets import PRESETS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    help_text = next(a.help for a in parser._actions if "--preset" in a.option_strings)
    listed = [name for name in PRESETS if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])",
                                                     help_text)]  # fmt: skip
    assert listed == list(PRESETS), help_text
