"""A finished sweep as a table: one row per trial, and the text printed at its end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from asd.errors import one_line
from asd.sweep.trial import OBJECTIVE

if TYPE_CHECKING:
    from asd.sweep.runner import SweepResult


def trial_summary(results: Any) -> pd.DataFrame:
    """One row per trial: status, sampled params, the objective and both estimators' hmean."""
    rows = []
    for res in results:
        metrics = res.metrics or {}
        row: dict[str, Any] = {
            "trial_id": metrics.get("trial_id") or trial_id_of(res.path),
            "status": "error" if res.error else "finished",
            "epochs": metrics.get("epoch", 0),
            OBJECTIVE: metrics.get(OBJECTIVE, float("nan")),
            "ml.hmean": metrics.get("ml.hmean", float("nan")),
            "elliptic.hmean": metrics.get("elliptic.hmean", float("nan")),
            "train_s": metrics.get("time.train_s", 0.0),
            "mlflow_run_id": metrics.get("mlflow_run_id"),
            "trial_dir": res.path,
            "error": one_line(res.error, last=True) if res.error else "",
        }
        row.update({f"param.{k}": v for k, v in (res.config or _params(res.path)).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    ended_early = frame["ml.hmean"].isna() & (frame["status"] == "finished")
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


def format_summary(result: SweepResult) -> str:
    """The table printed at the end of a sweep."""
    lines = [f"== sweep {result.name}: {len(result.summary)} trials in {result.wall_s:.0f}s"]
    if not result.summary.empty:
        cols = ["trial_id", "status", "epochs", OBJECTIVE, "ml.hmean", "elliptic.hmean"]
        cols += [c for c in result.summary.columns if c.startswith("param.")]
        shown = result.summary[cols].copy()
        shown.columns = [c.removeprefix("param.") for c in cols]
        lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if result.best_trial_id:
        lines.append(f"best trial {result.best_trial_id} (MLflow run {result.best_run_id})")
        tune_part = ", ".join(f"{k} {100 * v:.2f} %" for k, v in result.tune_scores.items())
        lines.append(f"  tuned machine types:    {tune_part}")
        if result.holdout_scores:
            hold = {k: v for k, v in result.holdout_scores.items() if k.endswith("hmean")}
            lines.append(
                "  held-out machine types: "
                + ", ".join(f"{k} {100 * v:.2f} %" for k, v in hold.items())
            )
    if result.model_version:
        lines.append(f"registered model version {result.model_version}")
    if result.promotion:
        lines.append(f"promotion: {result.promotion}")
    if result.deferred:
        lines.append(f"registration deferred: {result.deferred}")
    if result.wall_s:
        lines.append(
            f"wall {result.wall_s:.0f}s, training {result.train_s:.0f}s summed over trials"
        )
    return "\n".join(lines)
