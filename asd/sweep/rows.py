"""A trial's row: what it reports to Tune each epoch, and its line in the sweep's summary.

The trial writes a :class:`TrialRow`; Tune carries it as a flat dict (``tune.report``); the
driver (summary, console, descriptions, runner) reads it back through the same class. So the
row's keys are spelt here only: a renamed key cannot leave one reader behind.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from asd.config import SCORERS
from asd.detect.pipeline import (
    COMPANION_PREFIXES,
    COMPANIONS,
    REFERENCE_COMPANIONS,
    VS_REFERENCE,
    metric_key,
)

if TYPE_CHECKING:
    import pandas as pd

OBJECTIVE = "val_hmean"
"""What Tune, ASHA and Optuna maximise: validation hmean of the trial's detector (family and
``scoring.estimator``) on the tuning machines; the per-epoch estimate before the last epoch,
the full evaluation's figure at the last."""
ESTIMATE = "val_estimate"
"""The per-epoch estimate (:func:`asd.detect.validation.epoch_estimate`), also at the last epoch,
where it sits beside the full figure: how faithful the estimate ASHA read was."""


@dataclass
class Timings:
    """A trial's seconds so far, summed (``time.<field>`` in its row).

    Those of checkpoints and reports to Tune at epoch e show from epoch e + 1 on.
    """

    setup_s: float = 0.0
    """MLflow run, features and trial folder, before the first epoch."""
    train_s: float = 0.0
    validate_s: float = 0.0
    """Per-epoch estimates."""
    final_s: float = 0.0
    """Full evaluations."""
    eval_s: float = 0.0
    """``validate_s + final_s``."""
    log_s: float = 0.0
    """MLflow logging and artifacts."""
    checkpoint_s: float = 0.0
    """Checkpoints and reports to Tune."""

    def as_dict(self) -> dict[str, float]:
        """``{field: seconds}``, in :data:`TIMINGS` order."""
        return asdict(self)


TIMINGS = tuple(f.name for f in fields(Timings))
"""The timing keys, as summary columns (``train_s``) and, prefixed, in Tune's row."""
TRIAL_SCORES = tuple(
    metric_key(prefix, scorer) for prefix in ("", *COMPANIONS) for scorer in SCORERS
)
"""The summary figures a trial reports for each scorer: its detector and the companions."""
REFERENCE_HMEAN = metric_key(REFERENCE_COMPANIONS[0])
"""The trial's own scorer on the untrained clip-mean reference."""
VS_REFERENCE_HMEAN = metric_key(VS_REFERENCE)
"""The trial's own scorer's hmean minus the stronger reference's."""

TIME = "time"
"""Prefix of the timings in Tune's row and MLflow (``time.train_s``)."""
EPOCH, FINAL, RUN_ID, FAMILY, SCORER = "epoch", "final", "mlflow_run_id", "family", "scorer"
"""Tune row keys of the trial's bookkeeping (Tune adds ``trial_id`` itself)."""
TRIAL_ID, EPOCHS = "trial_id", "epochs"
"""Summary columns: the trial's id and its last epoch (``epoch`` in Tune's row)."""
SUMMARY_SHOWN = (EPOCHS, FAMILY, SCORER, OBJECTIVE, REFERENCE_HMEAN, VS_REFERENCE_HMEAN)
"""Summary columns every report shows: epochs, detector, objective, reference, difference."""
_TUNE_ITERATION = "training_iteration"  # Tune's own epoch counter, when a row has no epoch


@dataclass
class TrialRow:
    """One epoch's report of a trial: objective, headline figures, seconds, bookkeeping."""

    epoch: int = 0
    """1-based epoch (0: an untrained reference, evaluated once)."""
    final: bool = False
    """The trial's last epoch: the full evaluation and its artifacts ran."""
    run_id: str | None = None
    """The trial's MLflow child run."""
    family: str = ""
    scorer: str = ""
    objective: float = math.nan
    estimate: float = math.nan
    figures: dict[str, float] = field(default_factory=dict)
    """Headline figures by their flat key (``ml.hmean``, ``reference.hmean``, ``train.loss``)."""
    timings: Timings = field(default_factory=Timings)
    trial_id: str | None = None
    """Tune's trial id (read back only: Tune adds it to every row)."""

    def metrics(self) -> dict[str, float]:
        """The row's numbers as MLflow logs them per epoch: no bookkeeping.

        An epoch that was not validated (NaN objective) logs no objective or estimate.
        """
        validated = {OBJECTIVE: self.objective, ESTIMATE: self.estimate}
        return {
            **self.figures,
            **{k: v for k, v in validated.items() if math.isfinite(v)},
            **{f"{TIME}.{k}": v for k, v in self.timings.as_dict().items()},
        }

    def to_tune(self) -> dict[str, Any]:
        """The flat dict for ``tune.report``."""
        return {
            **self.metrics(),
            EPOCH: self.epoch,
            FINAL: self.final,
            RUN_ID: self.run_id,
            FAMILY: self.family,
            SCORER: self.scorer,
        }

    @classmethod
    def from_tune(cls, result: Mapping[str, Any]) -> TrialRow:
        """A row from Tune's result (or a results dataframe row).

        Tune's own keys are ignored, missing ones take the defaults, NaN is missing.
        """
        figures = {
            k: float(v)
            for k, v in result.items()
            if "." in k and "/" not in k and not k.startswith(f"{TIME}.") and _is_figure(v)
        }
        epoch = result.get(EPOCH, result.get(_TUNE_ITERATION))
        return cls(
            epoch=int(epoch) if _is_figure(epoch) else 0,
            final=bool(result.get(FINAL)) if _is_known(result.get(FINAL)) else False,
            run_id=_text(result.get(RUN_ID)),
            family=_text(result.get(FAMILY)) or "",
            scorer=_text(result.get(SCORER)) or "",
            objective=_number(result.get(OBJECTIVE)),
            estimate=_number(result.get(ESTIMATE)),
            figures=figures,
            timings=Timings(**{k: _number(result.get(f"{TIME}.{k}"), 0.0) for k in TIMINGS}),
            trial_id=_text(result.get(TRIAL_ID)),
        )

    def figure(self, key: str) -> float:
        """A headline figure, NaN when the row has none."""
        return self.figures.get(key, math.nan)

    def to_summary(self) -> dict[str, Any]:
        """The trial's columns in the sweep's summary (``summary.csv``), in their order."""
        return {
            EPOCHS: self.epoch,
            FAMILY: self.family,
            SCORER: self.scorer,
            OBJECTIVE: self.objective,
            **{k: self.figure(k) for k in (REFERENCE_HMEAN, VS_REFERENCE_HMEAN, *TRIAL_SCORES)},
            **self.timings.as_dict(),
            FINAL: self.final,
            RUN_ID: self.run_id,
        }

    @classmethod
    def from_summary(cls, row: Mapping[str, Any]) -> TrialRow:
        """A trial's row read back from its summary line (a pandas row or a dict)."""
        return cls.from_tune(
            {
                **{k: v for k, v in row.items() if k not in TIMINGS},
                **{f"{TIME}.{k}": row[k] for k in TIMINGS if k in row},
                EPOCH: row.get(EPOCHS),
            }
        )


def total_seconds(summary: pd.DataFrame) -> Timings:
    """Every trial's seconds in the sweep's summary, summed per timing."""
    return Timings(**{k: float(summary[k].sum()) if k in summary else 0.0 for k in TIMINGS})


def headline(flat: Mapping[str, Any]) -> dict[str, float]:
    """The figures Tune gets: summaries (``ml.hmean``, ``reference.ml.hmean``).

    Per-machine ones live in MLflow's tables only.
    """
    return {k: float(v) for k, v in flat.items() if _is_headline(k) and _is_figure(v)}


def _is_headline(key: str) -> bool:
    parts = key.split(".")
    return len(parts) <= 2 or (len(parts) == 3 and parts[0] in COMPANION_PREFIXES)


def _is_figure(value: Any) -> bool:
    """A number (not a bool) that is not NaN."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and not math.isnan(float(value))


def _is_known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _number(value: Any, missing: float = math.nan) -> float:
    return float(value) if _is_figure(value) else missing


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
