"""What a sweep produced, as one table per trial and the lines `asd sweep` prints.

Every trial's detector is shown beside the untrained reference (same scorer, same machine
types, same split) with the difference, on the tuned and the held-out machine types: a user
must see whether the learned part earns its cost.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from asd.config import ESTIMATORS, SCORERS
from asd.detect.pipeline import REFERENCE_COMPANIONS, VS_REFERENCE, metric_key
from asd.errors import one_line
from asd.sweep.rows import (
    EPOCHS,
    FAMILY,
    FINAL,
    OBJECTIVE,
    SUMMARY_SHOWN,
    TRIAL_ID,
    TrialRow,
    total_seconds,
)
from asd.sweep.space import SearchSpace
from asd.tracking import TAG_TRIAL, Tracker
from asd.tracking.uri import ui_link

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ray.tune import Result

BEST, REFERENCE = "best", REFERENCE_COMPANIONS[0]
"""Prefixes of the parent run's group figures: the winner's and the stronger reference's."""

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What a finished sweep produced."""

    name: str
    parent_run_id: str
    summary: pd.DataFrame
    best_trial_id: str | None
    best_run_id: str | None
    tune_scores: dict[str, float] = field(default_factory=dict)
    holdout_scores: dict[str, float] = field(default_factory=dict)
    family: str = "encoder"
    """The winner's detector family (encoder, reference or fusion)."""
    scorer: str = ESTIMATORS[0]
    """The scorer the winner was tuned with: its registered score and reference comparison."""
    detector: str = ""
    """What the winner's detector is, in one line (members, pooling, scorer, combination)."""
    ui: str = ""
    """Where MLflow's UI shows the sweep's parent run ('' while MLflow is away)."""
    note: str | None = None
    """Why nothing was registered although a trial finished (the reference won)."""
    model_version: str | None = None
    detector_version: str | None = None
    """The ``asd-detector`` version of the whole fitted winner (what `mlflow models serve` runs)."""
    promotion: str | None = None
    deferred: str | None = None
    """Why the winner was not registered now (MLflow was down: run `asd sync`, then resume)."""
    wall_s: float = 0.0
    train_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase of this call: ``setup`` (space, data, features, parent run), ``tune``
    (the trials, with Ray/Tune/MLflow in them), ``finalise`` (summary, closing runs), and
    ``holdout``/``register`` when the winner was scored and registered."""


def trial_summary(results: Sequence[Result]) -> pd.DataFrame:
    """One row per trial: status, family, params, objective, every scorer's hmean, reference."""
    rows = []
    for res in results:
        reported = TrialRow.from_tune(res.metrics or {})
        row: dict[str, Any] = {
            TRIAL_ID: reported.trial_id or trial_id_of(res.path),
            "status": "error" if res.error else "finished",
            **reported.to_summary(),
            "trial_dir": res.path,
            "error": one_line(res.error, last=True) if res.error else "",
        }
        row.update({f"param.{k}": v for k, v in (res.config or _params(res.path)).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # a trial's last report says whether it was its last epoch (full evaluation and artifacts)
    ended_early = ~frame[FINAL].astype(bool) & (frame["status"] == "finished")
    frame.loc[ended_early, "status"] = "stopped_early"
    return frame.sort_values(OBJECTIVE, ascending=False, na_position="last").reset_index(drop=True)


def trial_id_of(path: str) -> str:
    """Tune's trial id from its folder name (``run_trial_<id>_<n>_<params>_<time>``)."""
    name = Path(path).name
    return name.split("_")[2] if name.startswith("run_trial_") else name


def _params(path: str) -> dict[str, Any]:
    """A trial's sampled params, read from its folder.

    A trial that failed before its first report has no ``Result.config``.
    """
    try:
        return dict(json.loads((Path(path) / "params.json").read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def reference_metrics(result: SweepResult) -> dict[str, float]:
    """``reference.<group>.hmean``, ``best.<group>.hmean`` and their difference, per group.

    The winner's own scorer (``result.scorer``) on the tuned and the held-out machine types;
    the reference is the stronger of the two untrained ones (clip mean; mean + std).
    """
    out: dict[str, float] = {}
    for group, scores in (("tune", result.tune_scores), ("holdout", result.holdout_scores)):
        mine = scores.get(metric_key(result.scorer))
        refs = [
            scores[key]
            for name in REFERENCE_COMPANIONS
            if (key := metric_key(name, result.scorer)) in scores
        ]
        ref = max(refs) if refs else None
        if mine is not None:
            out[metric_key(BEST, group)] = mine
        if ref is not None:
            out[metric_key(REFERENCE, group)] = ref
        if mine is not None and ref is not None:
            out[metric_key(VS_REFERENCE, group)] = mine - ref
    return out


def format_summary(result: SweepResult) -> str:
    """The table printed at the end of a sweep."""
    lines = [f"== sweep {result.name}: {len(result.summary)} trials in {result.wall_s:.0f}s"]
    if not result.summary.empty:
        cols = [TRIAL_ID, "status", *SUMMARY_SHOWN, *(metric_key(s) for s in SCORERS)]
        cols += [c for c in result.summary.columns if c.startswith("param.")]
        shown = result.summary[[c for c in cols if c in result.summary]].copy()
        shown.columns = [c.removeprefix("param.") for c in shown.columns]
        lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if result.best_trial_id:
        lines.append(f"best trial {result.best_trial_id} (MLflow run {result.best_run_id})")
        lines.append(f"  detector: family {result.family}, scorer {result.scorer}")
        if result.detector:
            lines.append(f"  members: {result.detector}")
        lines += _group_lines("tuned machine types:   ", result.tune_scores)
        if result.holdout_scores:
            lines += _group_lines("held-out machine types:", result.holdout_scores)
        ref = reference_metrics(result)
        for group, label in (("tune", "tuned"), ("holdout", "held-out")):
            if metric_key(VS_REFERENCE, group) in ref:
                lines.append(
                    f"  {label}: detector {100 * ref[metric_key(BEST, group)]:.2f} % vs untrained "
                    f"reference {100 * ref[metric_key(REFERENCE, group)]:.2f} % "
                    f"({100 * ref[metric_key(VS_REFERENCE, group)]:+.2f} points, {result.scorer})"
                )
    untrained = _untrained_line(result.summary)
    if untrained:
        lines.append(untrained)
    if result.note:
        lines.append(f"note: {result.note}")
    if result.model_version:
        lines.append(f"registered model version {result.model_version}")
    if result.detector_version:
        lines.append(
            f"registered detector asd-detector v{result.detector_version}: serve it with "
            "`mlflow models serve -m models:/asd-detector@champion --env-manager local`"
        )
    if result.promotion:
        lines.append(f"promotion: {result.promotion}")
    if result.deferred:
        lines.append(f"registration deferred: {result.deferred}")
    if result.wall_s:
        evaluated = total_seconds(result.summary).eval_s
        lines.append(
            f"wall {result.wall_s:.0f}s, training {result.train_s:.0f}s and validation "
            f"{evaluated:.0f}s summed over trials"
        )
    if result.ui:
        lines.append(f"MLflow UI: {result.ui}")
    return "\n".join(lines)


def ui_page(tracker: Tracker, parent: str) -> str:
    """The UI link of the sweep's parent run; '' while it is only in the journal."""
    if parent.startswith("pending-"):
        return ""
    try:
        experiment = tracker.client.get_run(parent).info.experiment_id
    except Exception as exc:  # a link is a convenience: never fail a finished sweep for it
        log.warning("no MLflow UI link for run %s: %s", parent, one_line(exc))
        return ""
    return ui_link(tracker.tracking_uri, experiment, parent)


def _untrained_line(summary: pd.DataFrame) -> str:
    """Why reference trials show 0 epochs: they train nothing and were evaluated once."""
    if summary.empty or FAMILY not in summary:
        return ""
    untrained = summary[FAMILY].isin(["reference"]) | (summary.get(EPOCHS, 1) == 0)
    n = int((untrained & (summary["status"] == "finished")).sum())
    if not n:
        return ""
    which = "trial" if n == 1 else "trials"
    return (
        f"{n} untrained {which} (log-mel detectors): nothing to train, evaluated once "
        "(one result, 0 epochs)"
    )


def _group_lines(label: str, scores: dict[str, float]) -> list[str]:
    """The detector's and the reference's hmean per scorer on one group of machine types."""
    own = ", ".join(
        f"{s} {100 * scores[metric_key(s)]:.2f} %" for s in SCORERS if metric_key(s) in scores
    )
    ref = ", ".join(
        f"{s} {100 * scores[metric_key(REFERENCE, s)]:.2f} %"
        for s in SCORERS
        if metric_key(REFERENCE, s) in scores
    )
    lines = [f"  {label} {own}"]
    if ref:
        lines.append(f"  {' ' * len(label)} untrained reference: {ref}")
    return lines


def finalise_runs(tracker: Tracker, summary: pd.DataFrame) -> None:
    """ASHA stops trials between epochs: close their MLflow runs with the reason."""
    for _, row in summary.iterrows():
        run_id = TrialRow.from_summary(row).run_id
        if run_id is None:
            continue
        if row["status"] == "stopped_early":
            tracker.set_tags(run_id, {"asd.status": "stopped_early_by_asha"})
            tracker.finish(run_id, status="KILLED")
        elif row["status"] == "error":
            tracker.set_tags(run_id, {"asd.status": "failed", "asd.error": row["error"]})
            tracker.finish(run_id, status="FAILED")


def close_lost_trials(tracking_uri: str, parent: str, summary: pd.DataFrame) -> list[str]:
    """Retire child runs of trials Tune never recorded; their run ids.

    A driver killed between a trial's start and Tune's next snapshot of the experiment leaves
    that trial's child run RUNNING, and the resumed Tune samples another trial in its place.
    Such a run is ended KILLED, tagged ``asd.status=lost_with_the_driver`` and moved to MLflow's
    deleted runs (``mlflow runs restore`` brings it back), so the parent shows one child per
    trial of the sweep.
    """
    from mlflow import MlflowClient

    if parent.startswith("pending-"):
        return []  # MLflow is away: the journal replays the runs later
    known = set(summary[TRIAL_ID]) if not summary.empty else set()
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_run(parent).info.experiment_id
    lost = [
        run
        for run in client.search_runs(
            [experiment], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10000
        )
        if _left_by_a_driver(run) and run.data.tags.get(TAG_TRIAL) not in known
    ]
    for run in lost:
        client.set_tag(run.info.run_id, "asd.status", "lost_with_the_driver")
        client.set_terminated(run.info.run_id, status="KILLED")
        client.delete_run(run.info.run_id)
        log.warning(
            "trial %s: Tune never recorded it (its driver died first); its MLflow run %s is "
            "ended KILLED and moved to the deleted runs",
            run.data.tags.get(TAG_TRIAL),
            run.info.run_id,
        )
    return [run.info.run_id for run in lost]


def _left_by_a_driver(run: Any) -> bool:
    """RUNNING, or closed KILLED by :func:`close_running_children` when the sweep resumed."""
    return run.info.status == "RUNNING" or (
        run.info.status == "KILLED" and run.data.tags.get("asd.status") == KILLED_WITH_DRIVER
    )


KILLED_WITH_DRIVER = "killed_with_the_driver"
"""``asd.status`` of a trial run its sweep driver left RUNNING (closed KILLED later)."""


def close_running_children(tracking_uri: str, parent: str, note: str) -> list[str]:
    """End the child runs of ``parent`` still RUNNING as KILLED, tagged with ``note``.

    A driver stopped by a signal (or killed, then resumed) leaves the runs of its trials
    RUNNING: their workers died with it. A trial that Tune resumes reopens its run.
    """
    from mlflow import MlflowClient

    if parent.startswith("pending-"):
        return []  # MLflow is away: nothing to close yet
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_run(parent).info.experiment_id
        running = client.search_runs(
            [experiment],
            f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        for run in running:
            client.set_tag(run.info.run_id, "asd.status", KILLED_WITH_DRIVER)
            client.set_tag(run.info.run_id, "asd.note", note[:500])
            client.set_terminated(run.info.run_id, status="KILLED")
    except Exception as exc:  # noqa: BLE001 - never hide the error that stopped the sweep
        log.warning("could not close the trials' MLflow runs: %s", one_line(exc))
        return []
    if running:
        log.warning("%d trial run(s) left RUNNING closed as KILLED: %s", len(running), note)
    return [run.info.run_id for run in running]


def log_summary(tracker: Tracker, parent: str, result: SweepResult, space: SearchSpace) -> None:
    """The winner's and the reference's scores, the trial table and tags on the parent run."""
    metrics = {metric_key(BEST, "tune", figure=k): v for k, v in result.tune_scores.items()}
    metrics.update(
        {metric_key(BEST, "holdout", figure=k): v for k, v in result.holdout_scores.items()}
    )
    metrics.update(reference_metrics(result))
    metrics["sweep.trials"] = float(len(result.summary))
    tracker.log_metrics(parent, metrics)
    if not result.summary.empty:
        tracker.log_table(parent, result.summary, "summary.csv")
    tags = {
        "asd.best_trial_id": str(result.best_trial_id),
        "asd.space_description": space.description[:500],
    }
    if result.best_trial_id:
        tags.update({"asd.best_family": result.family, "asd.best_scorer": result.scorer})
    if result.model_version:
        tags["asd.model_version"] = str(result.model_version)
    if result.promotion:
        tags["asd.promotion"] = result.promotion[:500]
    if result.note:
        tags["asd.note"] = result.note[:500]
    tracker.set_tags(parent, tags)
