"""The sweep's console: one line per trial event instead of Ray's result tables.

Ray Tune's default output prints a status table for every report (hundreds of lines for a
small sweep). This callback runs on the driver and prints what a user follows: a trial
started (with its sampled settings), reached an epoch (``val_hmean``), finished, was stopped
early by ASHA, or failed (the root cause). ``asd sweep --verbose`` gives Ray's tables back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from asd.sweep.rows import OBJECTIVE, REFERENCE_HMEAN, TrialRow

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


class TrialLines(Callback):
    """A Tune callback printing one line per trial event through ``emit``."""

    def __init__(self, base_epochs: int, emit: Callable[[str], None] | None = None) -> None:
        self.base_epochs = base_epochs
        # None prints: Tune pickles its callbacks, and a stored ``print`` may not pickle
        # when something (a test's capture) has replaced the builtin meanwhile.
        self._sink = emit
        self.best = -math.inf
        self.last_epoch: dict[str, int] = {}

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """``trial <id> started: key=value ...`` (the sampled settings, short)."""
        shown = " ".join(f"{k}={_short(v)}" for k, v in sorted((trial.config or {}).items()))
        self.emit(f"trial {trial.trial_id} started: {shown}".rstrip())

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        """``trial <id> epoch e/E val_hmean v`` (an untrained reference: ``evaluated once``)."""
        row = TrialRow.from_tune(result)
        self.last_epoch[trial.trial_id] = row.epoch
        if not math.isnan(row.objective):
            self.best = max(self.best, row.objective)
        when = f"epoch {row.epoch}/{self._epochs(trial)}"
        if row.family == "reference":
            when = "evaluated once (untrained reference, nothing to train):"
        self.emit(f"trial {trial.trial_id} {when} {OBJECTIVE} {_short(row.objective)}")

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Finished all its epochs, or stopped early by the scheduler."""
        epoch, epochs = self.last_epoch.get(trial.trial_id, 0), self._epochs(trial)
        row = TrialRow.from_tune(trial.last_result or {})
        final = row.final or epoch >= epochs
        how = "finished" if final else f"stopped early by ASHA at epoch {epoch}"
        versus = (
            f" vs untrained reference {_short(row.figures[REFERENCE_HMEAN])}"
            if REFERENCE_HMEAN in row.figures and row.family != "reference"
            else ""
        )
        self.emit(
            f"trial {trial.trial_id} {how}: {OBJECTIVE} {_short(row.objective)}{versus} "
            f"(best so far {_short(self.best)})"
        )

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """The root cause of a failure, one line."""
        self.emit(f"trial {trial.trial_id} failed: {_root_cause(trial)}")

    def emit(self, line: str) -> None:
        """One event's line, to ``emit`` if given, else to stdout at once."""
        if self._sink is not None:
            self._sink(line)
        else:
            print(line, flush=True)

    def _epochs(self, trial: Trial) -> int:
        return int((trial.config or {}).get("train.epochs", self.base_epochs))


def _root_cause(trial: Trial) -> str:
    """The last non-empty line of the trial's error file (``AsdError: ...``)."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "see the trial's error.txt")[:300]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("-" if math.isinf(value) else f"{value:.4g}")
    return "-" if value is None else str(value)
