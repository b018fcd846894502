"""The sweep's winner (asd/sweep/winner.py): found among Tune's results, rebuilt, tagged."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asd.config import Config, FeatureConfig
from asd.detect.detector import evaluate_detector
from asd.errors import AsdError
from asd.features import FeatureSet
from asd.serve.registry import RegistryTags
from asd.sweep.rows import TRIAL_SCORES
from asd.sweep.settings import SweepSettings
from asd.sweep.storage import CONFIG_FILE, ENCODER_FILE
from asd.sweep.summary import SweepResult
from asd.sweep.winner import score_holdout, winner, winner_artifacts, winner_tags

REFERENCE = Config().with_overrides({"scoring.family": "reference", "scoring.reference": "max"})


def _result(**kwargs):
    base = dict(name="s", parent_run_id="p", summary=pd.DataFrame(), best_trial_id="t1")
    return SweepResult(**{**base, "best_run_id": "r1", **kwargs})


SCORES = {
    "ml.hmean": 0.7,
    "elliptic.hmean": 0.65,
    "reference.ml.hmean": 0.6,
    "reference_meanstd.ml.hmean": 0.62,
    "reference.elliptic.hmean": 0.9,  # another scorer's reference: not compared
}


def test_tags_carry_the_held_out_score_of_the_scorer_it_was_tuned_with():
    result = _result(tune_scores={"ml.hmean": 0.99}, holdout_scores=SCORES, scorer="ml")
    tags = winner_tags(result, "fp", ("fan", "slider"), ("valve",)).to_tags()
    assert tags == {
        "metric": "holdout.hmean",
        "metric_value": "0.700000",
        "estimator": "ml",
        "data_fingerprint": "fp:fan,slider|valve",
        "sweep_id": "s",
        "trial_id": "t1",
        "family": "encoder",
        "reference_metric_value": "0.620000",  # the stronger of the two references
    }


def test_without_held_out_types_the_tune_score_is_registered():
    result = _result(tune_scores=SCORES, scorer="elliptic", family="reference")
    tags = winner_tags(result, "fp", ("fan",), ()).to_tags()
    assert (tags["metric"], tags["metric_value"], tags["estimator"]) == (
        "tune.hmean",
        "0.650000",
        "elliptic",
    )
    assert tags["reference_metric_value"] == "0.900000"
    assert tags["data_fingerprint"] == "fp:fan|" and tags["family"] == "reference"


def test_no_reference_score_means_no_reference_tag():
    typed = winner_tags(_result(tune_scores={"ml.hmean": 0.5}, scorer="ml"), "fp", ("fan",), ())
    assert typed.reference_metric_value is None and typed.metric_value == 0.5
    tags = typed.to_tags()
    assert "reference_metric_value" not in tags and tags["metric_value"] == "0.500000"
    assert RegistryTags.from_tags(tags) == typed  # what promotion reads back


def test_an_encoder_winner_is_rebuilt_from_its_encoder_file(tmp_path, tiny_encoder_file):
    path = tiny_encoder_file(tmp_path / ENCODER_FILE, n_mels=16)
    (tmp_path / CONFIG_FILE).write_text(Config().to_json())  # the encoder's own config wins
    encoder, cfg, encoder_path = winner(tmp_path, "encoder")
    assert encoder_path == path and encoder is not None
    assert cfg.features.n_mels == 16 and cfg.encoder.embedding_dim == 8


def test_a_reference_winner_needs_only_its_config(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(REFERENCE.to_json())
    encoder, cfg, encoder_path = winner(tmp_path, "reference")
    assert (encoder, encoder_path) == (None, None)
    assert cfg == REFERENCE


def test_a_winner_missing_what_its_detector_needs_is_refused(tmp_path):
    with pytest.raises(AsdError, match=f"left no {CONFIG_FILE}"):
        winner(tmp_path, "encoder")
    (tmp_path / CONFIG_FILE).write_text(Config().to_json())  # the encoder family
    with pytest.raises(AsdError, match=rf"\(encoder family\) left no {ENCODER_FILE}"):
        winner(tmp_path, "encoder")


def _checkpoint(folder: Path, cfg: Config):
    from ray.tune import Checkpoint

    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(cfg.to_json())
    return Checkpoint.from_directory(str(folder))


def test_the_winner_comes_from_its_trials_checkpoint(tmp_path):
    from ray.tune import Result

    results = [
        Result(metrics={"trial_id": "a"}, checkpoint=_checkpoint(tmp_path / "ca", Config()),
               error=None, path=str(tmp_path / "run_trial_a_1_x")),
        Result(metrics={}, checkpoint=_checkpoint(tmp_path / "cb", REFERENCE), error=None,
               path=str(tmp_path / "run_trial_b_2_lr=0.1")),
    ]  # fmt: skip
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "stale.txt").write_text("from a winner crowned before a resume")
    got = winner_artifacts(results, pd.Series({"trial_id": "b", "trial_dir": ""}), dest)
    assert got == dest and not (dest / "stale.txt").exists()
    assert Config.from_json((dest / CONFIG_FILE).read_text()) == REFERENCE  # b's, by its folder
    got = winner_artifacts(results, pd.Series({"trial_id": "a", "trial_dir": ""}), dest)
    assert Config.from_json((got / CONFIG_FILE).read_text()) == Config()
    with pytest.raises(AsdError, match="trial c is not among the sweep's results"):
        winner_artifacts(results, pd.Series({"trial_id": "c", "trial_dir": ""}), dest)


def test_a_data_parallel_winner_is_read_from_its_trial_folder(tmp_path):
    from ray.tune import Result

    trial_dir = tmp_path / "run_trial_d_1_x"
    (trial_dir / "artifacts").mkdir(parents=True)
    (trial_dir / "artifacts" / CONFIG_FILE).write_text(REFERENCE.to_json())
    results = [Result(metrics={"trial_id": "d"}, checkpoint=None, error=None, path=str(trial_dir))]
    best = pd.Series({"trial_id": "d", "trial_dir": str(trial_dir)})
    assert winner_artifacts(results, best, tmp_path / "dest") == trial_dir / "artifacts"
    (trial_dir / "artifacts" / CONFIG_FILE).unlink()
    with pytest.raises(AsdError, match="trial d left no checkpoint"):
        winner_artifacts(results, best, tmp_path / "dest")


def _features():
    """Two machine types of random log-mels; valve's anomalies are louder upper bands."""
    rng = np.random.default_rng(0)
    rows, mels = [], []
    for machine in ("fan", "valve"):
        specs = [("train", "normal", "source" if i < 16 else "target") for i in range(20)]
        specs += [("test", lab, dom) for dom in ("source", "target")
                  for lab in ("normal", "anomaly") for _ in range(5)]  # fmt: skip
        for split, label, domain in specs:
            mel = rng.normal(size=(8, 20))
            if label == "anomaly" and machine == "valve":
                mel[4:] += 2.0
            mels.append(mel.astype(np.float32))
            rows.append((f"{machine}_{len(rows)}.wav", machine, 0, domain, split, label))
    index = pd.DataFrame(rows, columns=["clip", "machine", "section", "domain", "split", "label"])
    index["subset"] = "dev_data"
    return FeatureSet.from_arrays(mels, index, FeatureConfig(n_mels=8))


def test_held_out_scores_are_the_summary_figures_of_the_held_out_types_alone():
    features = _features()
    settings = SweepSettings(space=Path("s.yaml"), device="cpu")
    scores = score_holdout(None, REFERENCE, features, ("valve",), settings)
    assert set(scores) <= set(TRIAL_SCORES) and "ml.hmean" in scores
    assert scores["ml.hmean"] > 0.9  # valve's anomalies are easy to see
    alone = features.subset((features.index["machine"] == "valve").to_numpy())
    flat = evaluate_detector(None, alone, REFERENCE, device="cpu").metrics()
    assert scores == {k: v for k, v in flat.items() if k in TRIAL_SCORES}
    fan = score_holdout(None, REFERENCE, features, ("fan",), settings)
    assert fan["ml.hmean"] < 0.8  # fan's anomalies are noise: another machine, another score
    assert json.dumps(scores)  # plain floats, ready for MLflow


def test_a_winner_whose_run_began_while_mlflow_was_down_is_registered_under_its_real_run(
    tmp_path, tiny_encoder_file
):
    # The winner's trial started during an outage (its run id a journal placeholder); after
    # `asd sync` the resumed sweep registers it, and everything after (the detector's run,
    # the version's description) must name the real run, not the placeholder.
    from mlflow import MlflowClient
    from servers import free_port

    from asd.sweep.winner import register
    from asd.tracking import Tracker, default_tracking_uri, sync_journal

    (tmp_path / "mlflow").mkdir()
    store, journal = default_tracking_uri(tmp_path / "mlflow"), tmp_path / "journal"
    down = f"http://127.0.0.1:{free_port()}"
    offline = Tracker(down, "asd", journal_dir=journal, probe_timeout_s=0.5)
    parent = offline.start_sweep("s", {})
    child = offline.start_trial(parent, "t1", {})
    assert child.startswith("pending-")
    sync_journal(journal, store)

    tracker = Tracker(store, "asd", journal_dir=journal)
    result = _result(
        parent_run_id=parent, best_run_id=child, tune_scores={"ml.hmean": 0.5}, scorer="ml"
    )
    settings = SweepSettings(space=Path("smoke"), workdir=tmp_path, model_name="m")
    encoder = tiny_encoder_file(tmp_path / ENCODER_FILE)
    register(tracker, result, encoder, settings, "fp", ("fan",), ())

    assert result.model_version is not None and not result.best_run_id.startswith("pending-")
    version = MlflowClient(store).get_model_version("m", result.model_version)
    assert version.run_id == result.best_run_id
    assert MlflowClient(store).get_run(result.best_run_id).data.tags["asd.trial_id"] == "t1"
