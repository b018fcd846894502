"""asd.sweep.epochs: the pieces of a trial's per-epoch work, each alone (no Ray, no training)."""

import time

import pytest

from asd.errors import AsdError
from asd.sweep.epochs import (
    EpochResult,
    MlflowLogger,
    chain,
    due_at,
    load_epoch_hook,
    timed,
)
from asd.sweep.rows import Timings, TrialRow


def test_chain_runs_every_report_in_order():
    seen = []
    report = chain(
        lambda r: seen.append(("mlflow", r.row.epoch)), lambda r: seen.append(("tune", r.row.epoch))
    )
    report(EpochResult(TrialRow(epoch=2), None, None, Timings()))
    assert seen == [("mlflow", 2), ("tune", 2)]


def test_chain_stops_at_a_failing_report():
    seen = []

    def fails(_):
        raise RuntimeError("MLflow away")

    with pytest.raises(RuntimeError):
        chain(fails, seen.append)(EpochResult(TrialRow(), None, None, Timings()))
    assert seen == [], "Tune never gets a row its run did not log"


def test_timed_returns_the_result_and_its_seconds():
    result, seconds = timed(lambda x: time.sleep(0.01) or x * 2, 21)
    assert result == 42 and 0.005 < seconds < 5


@pytest.mark.parametrize(
    ("epoch", "every", "due"),
    [(1, 0, False), (5, 0, False), (3, 3, True), (4, 3, False), (6, 3, True), (1, 1, True)],
)
def test_due_at(epoch, every, due):
    assert due_at(epoch, every) is due


def test_a_bad_epoch_hook_is_refused():
    with pytest.raises(AsdError, match="module:function"):
        load_epoch_hook("nocolon")
    with pytest.raises(AsdError, match="cannot import"):
        load_epoch_hook("asd.nowhere:f")
    assert load_epoch_hook("time:sleep") is time.sleep


class FakeTracker:
    """Records what the logger asks of MLflow."""

    def __init__(self):
        self.calls = []

    def log_metrics(self, run_id, metrics, step=None):
        self.calls.append(("log_metrics", step, dict(metrics)))

    def finish(self, run_id, status="FINISHED"):
        self.calls.append(("finish", status))


def test_mlflow_logger_logs_each_epoch_once_and_never_ends_the_run(tmp_path):
    from asd.config import Config

    tracker = FakeTracker()
    logger = MlflowLogger(tracker, "r1", Config(), tmp_path, "fp")  # type: ignore[arg-type]
    timings = Timings(train_s=3.0)
    for epoch in (1, 2):
        row = TrialRow(epoch=epoch, final=epoch == 2, objective=0.5, estimate=0.5,
                       figures={"train.loss": 1.0}, timings=Timings(train_s=3.0))  # fmt: skip
        logger(EpochResult(row, None, None, timings))  # no evaluation: no artifacts
    assert [c[0] for c in tracker.calls] == ["log_metrics", "log_metrics"], "never finish"
    assert [c[1] for c in tracker.calls] == [1, 2]
    logged = tracker.calls[1][2]
    assert logged["time.train_s"] == 3.0 and logged["val_hmean"] == 0.5
    assert "epoch" not in logged and "final" not in logged, "bookkeeping is not a metric"
    assert timings.log_s > 0.0, "its own seconds count towards the next rows"


@pytest.mark.parametrize(
    "report_at, checkpoint_every, validated",
    [(None, 0, [1, 2, 3, 4, 5, 6]), ((2,), 0, [2, 6]), ((2,), 3, [2, 3, 6])],
)
def test_a_trial_validates_only_where_tune_reads_the_objective(
    report_at, checkpoint_every, validated, tmp_path, monkeypatch
):
    # ASHA reads the objective at its rungs; a checkpoint's report needs one; the last epoch
    # is the trial's figure. Elsewhere the epoch logs its training figures and nothing more.
    from asd.config import Config
    from asd.detect.validation import EpochValidation
    from asd.sweep import epochs as module

    calls = []
    monkeypatch.setattr(
        module, "validate", lambda *a, **k: calls.append(a[3]) or EpochValidation(0.5, 0.1)
    )
    seen = []
    cfg = Config().with_overrides({"train.epochs": 6})
    trial = module.TrialEpochs(
        cfg, None, "t1", tmp_path, "r1", report=seen.append,  # type: ignore[arg-type]
        report_at=report_at, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    for epoch in range(1, 7):
        trial.step(epoch, {"loss": 1.0}, None)
    assert [r.row.epoch for r in seen if r.validated] == validated
    assert len(calls) == len(validated) and calls[-1] is True, "the last is a full evaluation"
    skipped = [r for r in seen if not r.validated]
    assert len(seen) == 6 and all("train.loss" in r.row.metrics() for r in seen)
    assert all("val_hmean" not in r.row.metrics() for r in skipped)
    assert all(r.row.metrics()["val_hmean"] == 0.5 for r in seen if r.validated)
    assert trial.timings.validate_s == pytest.approx(0.1 * len(validated))
