"""A trial's notes: what its worker would print, kept for its MLflow run instead of the console.

A trial warns per machine type and section (a covariance needing shrinkage, a scorer's
fallback), MLflow logs its system-metrics monitor, Ray Train each checkpoint: dozens of lines
per trial that Ray forwards to the driver's console. By default a sweep's console is one line
per trial event, so inside a trial these go to a :class:`TrialNotes` (logged as
``notes.txt`` with the trial's run); ``asd sweep --verbose`` prints them as well.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from asd.errors import forget_warnings

NOTES_FILE = "notes.txt"
"""The artifact holding a trial's notes (beside its evaluation)."""

CHATTY = ("mlflow", "ray.train", "ray.tune", "ray.data")
"""Loggers whose INFO lines a trial's worker keeps off the console unless verbose."""


class TrialNotes(logging.Handler):
    """Collects the ``asd`` warnings of a trial, one line each, in order, without repeats."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's message (once: an epoch loop repeats the same note)."""
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        if line not in self.lines:
            self.lines.append(line)

    def text(self) -> str:
        """The notes as a text file's content ('' when there are none)."""
        return "".join(f"{line}\n" for line in self.lines)


@contextmanager
def collect_notes(verbose: bool) -> Iterator[TrialNotes]:
    """Route the ``asd`` warnings of the block into a TrialNotes; quiet chatty loggers.

    ``verbose`` keeps the console as it was (the notes are collected as well).
    """
    forget_warnings()
    notes = TrialNotes()
    asd_log = logging.getLogger("asd")
    saved = asd_log.propagate, {name: logging.getLogger(name).level for name in CHATTY}
    asd_log.addHandler(notes)
    if not verbose:
        asd_log.propagate = False
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield notes
    finally:
        asd_log.removeHandler(notes)
        asd_log.propagate = saved[0]
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)
