"""One-line messages and notes said once (redaction is in tests/test_security.py)."""

import logging

from asd.errors import one_line, warn_once


def test_one_line_takes_the_first_non_empty_line_or_the_type():
    assert one_line(ValueError("\n  first  \nsecond")) == "first"
    assert one_line(KeyError()) == "KeyError"
    assert len(one_line(RuntimeError("x" * 1000))) == 300


def test_one_line_last_takes_the_root_cause_of_a_remote_traceback():
    err = RuntimeError("ray::ImplicitFunc.train()\n  File ...\nAsdError: loss became NaN\n")
    assert one_line(err, last=True) == "AsdError: loss became NaN"


def test_warn_once_logs_each_key_once(caplog):
    log = logging.getLogger("asd.test_errors")
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(3):
            warn_once(log, "fallback used")
            warn_once(log, "clip a.wav resampled", key=("resample", "a.wav"))
            warn_once(log, "clip a.wav resampled again", key=("resample", "a.wav"))
            warn_once(log, "clip b.wav resampled", key=("resample", "b.wav"))
    assert caplog.messages == ["fallback used", "clip a.wav resampled", "clip b.wav resampled"]
