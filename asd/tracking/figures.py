"""Which of a trial's figures MLflow gets as metrics and which as tables, and its description.

MLflow's run page draws one chart per metric key. A trial scores every scorer on every
machine type and section, for its detector and the companions beside it: logged as metric
keys that is hundreds of one-point charts, and the comparison a user wants (detector vs
untrained reference) drowns. So a run keeps a few dozen headline metrics with their epoch
as step (the objective, each scorer's hmean for the detector and its companions, the
difference to the reference, training and timing figures), and the rest goes into tables
the UI shows (``tables/scorers.json``, ``tables/sections.json``; ``mlflow.load_table``
reads them across runs), beside the per-scorer CSVs under ``evaluation/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from asd.detect.detector import detector_spec, stronger_reference
from asd.detect.metrics import METRICS
from asd.detect.pipeline import COMPANION_PREFIXES

if TYPE_CHECKING:
    from asd.config import Config
    from asd.detect.pipeline import Evaluation
    from asd.tracking.tracker import Tracker

PER_EPOCH = ("train", "time")
"""Prefixes of the training and timing figures logged every epoch."""
NOTE_TAG = "mlflow.note.content"
"""The run tag MLflow's UI shows (and edits) as the run's description, in Markdown."""
OWN = "trial"
"""The ``detector`` column's value for the trial's own detector in its tables."""
SCORER_COLUMNS = ("detector", "scorer", "hmean", *METRICS, "n_sections")
"""Columns of ``tables/scorers.json``: one row per detector and scorer."""
SECTION_COLUMNS = ("detector", "scorer", "machine", "section", *METRICS, "n_clips")
"""Columns of ``tables/sections.json``: one row per detector, scorer, machine and section."""


def is_headline(key: str) -> bool:
    """A metric the run keeps: ``val_hmean``, ``ml.hmean``, ``reference.ml.hmean``, ``train.loss``.

    Everything else (``ml.pauc``, ``ml.fan.s00.auc_source``) lives in the trial's tables.
    """
    parts = key.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[0] in PER_EPOCH):
        return True
    if parts[-1] != "hmean":
        return False
    return len(parts) == 2 or (len(parts) == 3 and parts[0] in COMPANION_PREFIXES)


def log_epoch(tracker: Tracker, run_id: str, row: dict[str, Any], epoch: int) -> None:
    """The headline figures of one epoch's report, with the epoch as step."""
    metrics = {k: float(v) for k, v in row.items() if is_headline(k) and _is_number(v)}
    tracker.log_metrics(run_id, metrics, step=epoch)


def scorer_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per detector (the trial's, then its companions) and scorer: the summaries."""
    rows = [
        {"detector": name, "scorer": scorer, **res.summary}
        for name, ev in _detectors(evaluation)
        for scorer, res in ev.by_estimator.items()
    ]
    return pd.DataFrame(rows).reindex(columns=list(SCORER_COLUMNS))


def section_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per detector, scorer, machine type and section: the official figures."""
    parts = [
        res.table.assign(detector=name, scorer=scorer)
        for name, ev in _detectors(evaluation)
        for scorer, res in ev.by_estimator.items()
    ]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame.reindex(columns=list(SECTION_COLUMNS))


def log_figures(tracker: Tracker, run_id: str, evaluation: Evaluation, cfg: Config) -> None:
    """A finished trial's tables and its description (detector beside the reference)."""
    tracker.log_table(run_id, scorer_table(evaluation), "tables/scorers.json")
    tracker.log_table(run_id, section_table(evaluation), "tables/sections.json")
    tracker.set_tags(run_id, {NOTE_TAG: trial_note(evaluation, cfg)})


def trial_note(evaluation: Evaluation, cfg: Config) -> str:
    """Markdown: what the detector is and each scorer's hmean beside the untrained reference."""
    s = cfg.scoring
    lines = [
        f"{describe_detector(cfg)}, on the tuned machine types beside the stronger untrained "
        "reference (log-mel clip mean, or mean + std). Official hmean in %:",
        "",
        "| scorer | detector | untrained reference | difference (points) |",
        "|---|---|---|---|",
    ]
    for scorer, res in evaluation.by_estimator.items():
        own = res.summary.get("hmean", float("nan"))
        best = stronger_reference(evaluation, scorer)
        ref = best[1] if best is not None else float("nan")
        mark = " (tuned)" if scorer == s.estimator else ""
        lines.append(f"| {scorer}{mark} | {percent(own)} | {percent(ref)} | {points(own - ref)} |")
    lines += [
        "",
        "Per scorer, machine type and section: the tables `tables/scorers.json` and "
        "`tables/sections.json`, and `evaluation/<scorer>/sections.csv` (artifacts).",
    ]
    return "\n".join(lines)


def describe_detector(cfg: Config) -> str:
    """``**ensemble** detector (`max of z over logmel/meanstd/ml, logmel/max/ml`)``."""
    s = cfg.scoring
    return f"**{s.family}** detector (`{detector_spec(s).describe(s.estimator)}`)"


def percent(value: float | None) -> str:
    """``61.23 %``, or ``n/a`` for a missing figure."""
    return "n/a" if value is None or pd.isna(value) else f"{100 * value:.2f} %"


def points(value: float | None) -> str:
    """A difference of two fractions in percentage points: ``+3.10``, or ``n/a``."""
    return "n/a" if value is None or pd.isna(value) else f"{100 * value:+.2f}"


def _detectors(evaluation: Evaluation) -> list[tuple[str, Evaluation]]:
    return [(OWN, evaluation), *evaluation.companions.items()]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
