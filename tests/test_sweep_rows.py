"""The trial's Tune row: written and read back through one class, whatever Tune adds."""

import math

import pandas as pd

from asd.sweep.rows import (
    OBJECTIVE,
    TIMINGS,
    TRIAL_SCORES,
    Timings,
    TrialRow,
    headline,
    total_seconds,
)


def _row() -> TrialRow:
    return TrialRow(
        epoch=3,
        final=True,
        run_id="r1",
        family="fusion",
        scorer="ml",
        objective=0.7,
        estimate=0.65,
        figures={"ml.hmean": 0.7, "reference.hmean": 0.6, "train.loss": 1.5},
        timings=Timings(train_s=4.0, eval_s=1.0),
    )


def test_round_trip_through_tune():
    row = _row()
    reported = row.to_tune()
    assert reported[OBJECTIVE] == 0.7 and reported["time.train_s"] == 4.0
    assert TrialRow.from_tune(reported) == row


def test_tune_own_keys_are_ignored_and_its_trial_id_is_kept():
    reported = {
        **_row().to_tune(),
        "trial_id": "abc",
        "training_iteration": 3,
        "time_this_iter_s": 2.0,
        "config/train.lr": 0.1,  # a results dataframe's flattened config
        "done": True,
    }
    back = TrialRow.from_tune(reported)
    assert back.trial_id == "abc"
    assert set(back.figures) == {"ml.hmean", "reference.hmean", "train.loss"}


def test_missing_keys_take_the_defaults():
    back = TrialRow.from_tune({"training_iteration": 2})
    assert back.epoch == 2  # Tune's counter when the row has no epoch
    assert math.isnan(back.objective) and back.run_id is None and back.family == ""
    assert back.timings == Timings() and not back.final


def test_nan_is_missing():
    # a results dataframe fills the keys one trial never reported with NaN
    nan = float("nan")
    back = TrialRow.from_tune(
        {OBJECTIVE: nan, "mlflow_run_id": nan, "family": nan, "ml.hmean": nan, "time.log_s": nan}
    )
    assert math.isnan(back.objective) and back.run_id is None and back.family == ""
    assert "ml.hmean" not in back.figures and back.timings.log_s == 0.0
    assert math.isnan(back.figure("ml.hmean"))


def test_summary_line_round_trip_and_columns():
    row = _row()
    line = row.to_summary()
    assert set(TIMINGS) <= set(line) and set(TRIAL_SCORES) <= set(line)
    assert line["epochs"] == 3 and line["train_s"] == 4.0
    back = TrialRow.from_summary(pd.Series(line))
    assert (back.epoch, back.run_id, back.family, back.timings) == (3, "r1", "fusion", row.timings)
    assert back.figure("reference.hmean") == 0.6


def test_total_seconds_sums_every_trial():
    frame = pd.DataFrame([_row().to_summary(), _row().to_summary()])
    assert total_seconds(frame).train_s == 8.0
    assert total_seconds(pd.DataFrame()).train_s == 0.0


def test_headline_keeps_summaries_only():
    flat = {
        "ml.hmean": 0.5,
        "ml.pauc": 0.4,
        "reference.ml.hmean": 0.3,
        "ml.fan.s00.auc_source": 0.9,
        "reference.ml.fan.s00.pauc": 0.2,
        "train.loss": 1.0,
        "flag": True,
    }
    assert set(headline(flat)) == {"ml.hmean", "ml.pauc", "reference.ml.hmean", "train.loss"}
