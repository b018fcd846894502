"""The Markdown descriptions MLflow's UI shows for a sweep, its registered model and versions.

A user opening the UI reads the sweep's parent run first: its description is the sweep's
summary (the trials ranked, the champion beside the untrained reference on the tuned and the
held-out machine types, how to run it again), not a table hidden in an artifact file. A
registered version says what the detector is and what it scored beside the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from asd.config import SCORERS
from asd.detect.pipeline import VS_REFERENCE, metric_key
from asd.sweep.rows import OBJECTIVE, REFERENCE_HMEAN, VS_REFERENCE_HMEAN, TrialRow
from asd.sweep.summary import BEST, REFERENCE, SweepResult, reference_metrics
from asd.tracking.figures import percent, points

if TYPE_CHECKING:
    from asd.sweep.space import SearchSpace

GROUPS = (("tune", "tuned"), ("holdout", "held-out"))
"""The two groups of machine types a winner is scored on, and how a user reads them."""
MAX_ROWS = 50
"""Trials listed in the parent's description (every trial is in ``summary.csv``)."""


def sweep_note(result: SweepResult, space: SearchSpace, command: str | None) -> str:
    """The parent run's description: champion vs reference, ranked trials, how to reproduce."""
    lines = [_headline(result), "", space.description.strip(), ""]
    lines += _champion(result)
    lines += _trials(result.summary)
    lines += [
        "## Reproduce",
        "",
        "```",
        command or f"asd sweep --space <space file> --name {result.name}",
        "```",
        "",
        "The search space, the data's fingerprint, the machine groups and the resolved "
        "settings are in the artifacts under `provenance/`; every trial's row is in "
        "`summary.csv`.",
    ]
    return "\n".join(lines)


def _headline(result: SweepResult) -> str:
    """The first line (the UI folds the rest): the champion beside the reference."""
    if not result.best_trial_id:
        return f"Sweep `{result.name}`: no trial finished."
    ref = reference_metrics(result)
    parts = [
        f"{label} {percent(ref[metric_key(BEST, group)])} vs untrained reference "
        f"{percent(ref.get(metric_key(REFERENCE, group)))} "
        f"({points(ref.get(metric_key(VS_REFERENCE, group)))} points)"
        for group, label in GROUPS
        if metric_key(BEST, group) in ref
    ]
    return (
        f"**Champion of sweep `{result.name}`: trial `{result.best_trial_id}`**, "
        f"{result.detector or result.family}: " + "; ".join(parts) + f" ({result.scorer} hmean)."
    )


def _champion(result: SweepResult) -> list[str]:
    if not result.best_trial_id:
        return ["No trial finished: there is no champion.", ""]
    lines = [
        "## Champion",
        "",
        f"Trial `{result.best_trial_id}` (run `{result.best_run_id}`): "
        f"{result.detector or result.family}.",
    ]
    if result.model_version:
        lines.append(f"Registered as version {result.model_version}.")
    if result.promotion:
        lines.append(f"Promotion: {result.promotion}.")
    if result.note:
        lines.append(f"Note: {result.note}.")
    if result.deferred:
        lines.append(f"Registration deferred: {result.deferred}.")
    lines += ["", *scores_table(result), ""]
    return lines


def scores_table(result: SweepResult) -> list[str]:
    """The winner's and the reference's hmean per scorer on the tuned and held-out types."""
    by_group = {"tune": result.tune_scores, "holdout": result.holdout_scores}
    groups = [(label, by_group[group]) for group, label in GROUPS if by_group[group]]
    head = "| scorer | " + " | ".join(
        f"{label}: detector | {label}: untrained reference | {label}: difference (points)"
        for label, _ in groups
    )
    lines = [head + " |", "|---" * (1 + 3 * len(groups)) + "|"]
    for scorer in SCORERS:
        cells = []
        for _, scores in groups:
            own = scores.get(metric_key(scorer))
            ref = scores.get(metric_key(REFERENCE, scorer))
            diff = own - ref if own is not None and ref is not None else None
            cells += [percent(own), percent(ref), points(diff)]
        mark = " (tuned with)" if scorer == result.scorer else ""
        lines.append(f"| {scorer}{mark} | " + " | ".join(cells) + " |")
    return lines


def _trials(summary: pd.DataFrame) -> list[str]:
    if summary.empty:
        return []
    params = [c for c in summary.columns if c.startswith("param.")]
    head = ["rank", "trial", "status", "epochs", "family", "scorer", OBJECTIVE]
    head += ["untrained reference", "difference (points)"]
    head += [p.removeprefix("param.") for p in params]
    lines = [
        f"## Trials, best first ({OBJECTIVE}: validation hmean of the trial's scorer)",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for rank, values in enumerate(summary.head(MAX_ROWS).to_dict("records"), start=1):
        row = TrialRow.from_summary(values)
        cells = [str(rank), f"`{row.trial_id}`", str(values["status"])]
        cells += [str(row.epoch), row.family, row.scorer]
        cells += [percent(row.objective), percent(row.figure(REFERENCE_HMEAN))]
        cells += [points(row.figure(VS_REFERENCE_HMEAN)), *(_param(values[p]) for p in params)]
        lines.append("| " + " | ".join(cells) + " |")
    if len(summary) > MAX_ROWS:
        lines.append(f"\n({len(summary) - MAX_ROWS} more trials in `summary.csv`)")
    return [*lines, ""]


def _param(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def version_note(result: SweepResult, metric: str) -> str:
    """A registered version's description: the detector, its score beside the reference."""
    lines = [
        f"{result.detector or result.family}, from trial `{result.best_trial_id}` of sweep "
        f"`{result.name}` (run `{result.best_run_id}`).",
        "",
    ]
    ref = reference_metrics(result)
    for group, label in GROUPS:
        if metric_key(BEST, group) in ref:
            lines.append(
                f"- {label} machine types: hmean {percent(ref[metric_key(BEST, group)])} vs "
                f"untrained reference {percent(ref.get(metric_key(REFERENCE, group)))} "
                f"({points(ref.get(metric_key(VS_REFERENCE, group)))} points, {result.scorer})"
            )
    lines += ["", f"Promotion compares `{metric}` between comparable versions."]
    return "\n".join(lines)


def model_note(name: str, latest: str, champion: str | None, latest_note: str) -> str:
    """The registered model's description: what it is, how to use it, its newest version."""
    holder = f"version {champion}" if champion else "none yet"
    return "\n".join(
        [
            "Encoders for anomalous machine-sound detection (DCASE 2023 Task 2), registered "
            "by `asd sweep`: each version is a sweep's winner, scored on the tuned and the "
            "held-out machine types beside the untrained log-mel reference.",
            "",
            f"Champion (alias `champion`): {holder}. Score new clips with it: "
            f"`asd score --encoder models:/{name}@champion --tracking-uri <uri> --data <data> "
            "--machine <type> <wav files>`.",
            "",
            f"Latest version {latest}: {latest_note}",
        ]
    )
