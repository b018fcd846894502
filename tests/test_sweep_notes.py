import logging

import pytest

from asd.errors import warn_once
from asd.sweep.notes import CHATTY, TrialNotes, collect_notes


@pytest.fixture
def console(caplog):
    """What reaches the root logger (the console), at INFO and above."""
    caplog.set_level(logging.INFO)
    return caplog


def test_notes_keep_asd_warnings_once_each_in_order(console):
    log = logging.getLogger("asd.detect.test")
    with collect_notes(verbose=False) as notes:
        log.warning("section %02d needs shrinkage", 0)
        log.info("an info line is no note")
        log.warning("section %02d needs shrinkage", 0)  # an epoch loop repeats it
        log.error("scorer fell back")
    assert notes.lines == [
        "WARNING asd.detect.test: section 00 needs shrinkage",
        "ERROR asd.detect.test: scorer fell back",
    ]
    assert notes.text() == "".join(f"{line}\n" for line in notes.lines)
    assert console.records == []  # quiet: nothing reached the console
    assert TrialNotes().text() == ""


def test_verbose_keeps_the_console_and_still_collects(console):
    console.set_level(logging.INFO, logger="mlflow")  # whatever an earlier import set it to
    with collect_notes(verbose=True) as notes:
        logging.getLogger("asd.x").warning("kept")
        logging.getLogger("mlflow").info("mlflow says")
    assert notes.lines == ["WARNING asd.x: kept"]
    assert [r.getMessage() for r in console.records] == ["kept", "mlflow says"]


def test_quiet_trials_hold_chatty_loggers_to_warnings_and_give_them_back(console):
    before = {name: logging.getLogger(name).level for name in CHATTY}
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.INFO)
    asd_log = logging.getLogger("asd")
    handlers = list(asd_log.handlers)
    try:
        with collect_notes(verbose=False):
            for name in CHATTY:
                logging.getLogger(name).info("chatter")
                assert logging.getLogger(name).level == logging.WARNING
            assert asd_log.propagate is False
        assert console.records == []
        assert [logging.getLogger(name).level for name in CHATTY] == [logging.INFO] * len(CHATTY)
        assert asd_log.propagate is True and asd_log.handlers == handlers
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def test_a_new_trial_hears_a_warning_said_once_before():
    log = logging.getLogger("asd.features")
    with collect_notes(verbose=False) as first:
        warn_once(log, "clip read twice")
        warn_once(log, "clip read twice")
    with collect_notes(verbose=False) as second:  # a reused worker, the next trial
        warn_once(log, "clip read twice")
    assert first.lines == second.lines == ["WARNING asd.features: clip read twice"]


def test_the_settings_come_back_when_the_block_raises():
    asd_log = logging.getLogger("asd")
    with pytest.raises(RuntimeError), collect_notes(verbose=False) as notes:
        raise RuntimeError("trial failed")
    assert notes not in asd_log.handlers and asd_log.propagate is True
