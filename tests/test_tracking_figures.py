"""What a finished trial leaves in a real local MLflow store: few metrics, tables, a description.

The trial's epoch report runs as in a sweep (``TrialEpochs`` with ``MlflowLogger``, without
Ray): a tiny encoder is scored with every scorer beside the untrained reference on a tiny
synthetic tree.
"""

import json

import pandas as pd
import pytest

from asd.data.index import index_dataset
from asd.detect.validation import validation_set
from asd.errors import AsdError
from asd.features import extract_features
from asd.model.encoder import load_encoder
from asd.sweep.epochs import MlflowLogger, TrialEpochs
from asd.sweep.rows import OBJECTIVE, TRIAL_SCORES
from asd.tracking import KIND_TRAINING, TAG_KIND, Tracker, default_tracking_uri
from asd.tracking.figures import (
    NOTE_TAG,
    SCORER_COLUMNS,
    SECTION_COLUMNS,
    is_headline,
    percent,
)

MAX_METRICS = 40
"""A trial's run page must stay readable: a few dozen charts, not hundreds."""


@pytest.fixture(scope="module")
def finished_trial(tmp_path_factory, synth_tree, tiny_encoder_file):
    """(tracker, run id, Tune's row, evaluation's config) of a one-epoch trial's last report."""
    work = tmp_path_factory.mktemp("trial")
    encoder, cfg, _ = load_encoder(tiny_encoder_file(work / "encoder.pt", n_mels=16))
    cfg = cfg.with_overrides({"train.epochs": 1, "scoring.threshold_folds": 0})
    features = extract_features(index_dataset(synth_tree()), cfg.features, work / "features")
    uri = default_tracking_uri(work)
    tracker = Tracker(uri, "asd")
    parent = tracker.start_sweep("s1", {})
    run_id = tracker.start_trial(parent, "t1", {})
    logger = MlflowLogger(tracker, run_id, cfg, work / "t1" / "artifacts", "x")
    validation = validation_set(features, ("fan", "slider"))
    epochs = TrialEpochs(cfg, validation, "t1", work / "t1", run_id, logger, device="cpu")
    row = epochs.step(1, {"loss": 1.5, "lr": 1e-3, "seconds": 2.0}, encoder).to_tune()
    return tracker, run_id, row, cfg


def test_experiment_opens_as_model_training(finished_trial):
    tracker, *_ = finished_trial
    experiment = tracker.client.get_experiment_by_name("asd")
    assert experiment.tags[TAG_KIND] == KIND_TRAINING == "custom_model_development"


def test_an_experiment_made_without_the_kind_gets_it(tmp_path):
    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(uri, "old")
    tracker.client.create_experiment("old")
    tracker.start_sweep("s", {})
    assert tracker.client.get_experiment_by_name("old").tags[TAG_KIND] == KIND_TRAINING


def test_a_trial_logs_a_few_dozen_headline_metrics(finished_trial):
    tracker, run_id, row, _ = finished_trial
    metrics = tracker.client.get_run(run_id).data.metrics
    assert len(metrics) <= MAX_METRICS, sorted(metrics)
    assert {OBJECTIVE, "ml.hmean", "elliptic.hmean", "train.loss"} <= set(metrics)
    assert {"reference_meanstd.ml.hmean", "encoder.ml.hmean"} <= set(metrics)
    assert {"reference.ml.hmean", "vs_reference.ml.hmean", "reference.hmean"} <= set(metrics)
    assert {"time.train_s", "time.eval_s"} <= set(metrics)
    assert not [k for k in metrics if "fan" in k or "slider" in k], "per-machine keys"
    steps = tracker.client.get_metric_history(run_id, OBJECTIVE)
    assert [m.step for m in steps] == [1]
    # Tune still gets every summary figure the sweep's summary reads
    reported = {k for k in TRIAL_SCORES if k.split(".")[-2] in ("ml", "elliptic")}
    assert reported <= set(row)
    stronger = max(row["reference.ml.hmean"], row["reference_meanstd.ml.hmean"])
    assert metrics["vs_reference.ml.hmean"] == pytest.approx(row["ml.hmean"] - stronger)


def test_headline_keys():
    assert is_headline("val_hmean") and is_headline("train.loss") and is_headline("ml.hmean")
    assert is_headline("reference.knn.hmean") and is_headline("vs_reference.hmean")
    assert is_headline("reference_meanstd.ml.hmean")
    assert not is_headline("ml.pauc") and not is_headline("ml.fan.s00.auc_source")
    assert not is_headline("reference.ml.fan.s00.pauc") and not is_headline("ml.n_sections")


def _table(tracker, run_id, name):
    """The table as MLflow reads it (its load_table searches through the global URI).

    The global is set on MLflow's module alone: ``mlflow.set_tracking_uri`` would also write
    ``MLFLOW_TRACKING_URI`` into the environment, and restoring a URI it resolved from the
    default would leave that variable behind for every later sweep subprocess.
    """
    from mlflow.tracking._tracking_service import utils as tracking_utils

    experiment = tracker.client.get_experiment_by_name("asd").experiment_id
    previous = tracking_utils._tracking_uri
    tracking_utils._tracking_uri = tracker.tracking_uri
    try:
        return tracker.client.load_table(experiment, name, run_ids=[run_id])
    finally:
        tracking_utils._tracking_uri = previous


def test_per_machine_figures_are_tables_the_ui_lists(finished_trial):
    tracker, run_id, row, _ = finished_trial
    sections = _table(tracker, run_id, "tables/sections.json")
    assert list(sections.columns) == list(SECTION_COLUMNS)
    assert set(sections["detector"]) == {"trial", "reference", "reference_meanstd", "encoder"}
    assert set(sections["scorer"]) == {"ml", "elliptic"}
    assert set(sections["machine"]) == {"fan", "slider"}
    assert len(sections) == 4 * 2 * 2  # detectors x scorers x (machine, section)
    assert sections[["auc_source", "auc_target", "pauc"]].notna().all().all()
    scorers = _table(tracker, run_id, "tables/scorers.json")
    assert list(scorers.columns) == list(SCORER_COLUMNS)
    own = scorers.query("detector == 'trial' and scorer == 'ml'")["hmean"].item()
    assert own == pytest.approx(row["ml.hmean"])
    ref = scorers.query("detector == 'reference' and scorer == 'elliptic'")["hmean"].item()
    assert ref == pytest.approx(row["reference.elliptic.hmean"])
    listed = json.loads(tracker.client.get_run(run_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": "tables/sections.json", "type": "table"} in listed


def test_the_trial_describes_its_detector_beside_the_reference(finished_trial):
    tracker, run_id, row, _ = finished_trial
    note = tracker.client.get_run(run_id).data.tags[NOTE_TAG]
    assert "**encoder** detector (`encoder/own/ml`)" in note
    ml_line = next(line for line in note.splitlines() if line.startswith("| ml (tuned)"))
    stronger = max(row["reference.ml.hmean"], row["reference_meanstd.ml.hmean"])
    assert percent(row["ml.hmean"]) in ml_line and percent(stronger) in ml_line


def test_logging_a_table_again_doubles_nothing(finished_trial):
    # a journal replay logs the same table again: MLflow's own log_table would append to it
    tracker, run_id, _, _ = finished_trial
    before = _table(tracker, run_id, "tables/sections.json")
    listed = tracker.client.get_run(run_id).data.tags["mlflow.loggedArtifacts"]
    tracker.log_table(run_id, before, "tables/sections.json")
    assert len(_table(tracker, run_id, "tables/sections.json")) == len(before)
    assert tracker.client.get_run(run_id).data.tags["mlflow.loggedArtifacts"] == listed


def test_a_table_needs_a_json_or_csv_name(finished_trial):
    tracker, run_id, _, _ = finished_trial
    with pytest.raises(AsdError, match="tables/x.txt"):
        tracker.log_table(run_id, pd.DataFrame({"a": [1]}), "tables/x.txt")
