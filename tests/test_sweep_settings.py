"""asd/sweep/settings.py: a flag, else the space's ``sweep:`` section, else a default."""

import dataclasses
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest

from asd.sweep.settings import DEFAULT_WORKDIR, RUN_DEFAULTS, SweepSettings, with_space_defaults
from asd.sweep.space import SWEEP_KEYS, parse_space

BASE = SweepSettings(space=Path("s.yaml"))


def _space(**sweep):
    return parse_space({"base": "smoke", "params": {}, "sweep": sweep}, "t")


def test_unset_settings_come_from_the_defaults_when_the_space_is_silent():
    filled = with_space_defaults(BASE, _space())
    for key, default in RUN_DEFAULTS.items():
        assert getattr(filled, key) == default, key
    assert filled.num_samples is None  # not a run default: the runner asks the space itself


def test_the_spaces_section_fills_what_no_flag_set():
    space = _space(cpus_per_trial=2, checkpoint_every=3, holdout_machines=["valve"])
    filled = with_space_defaults(BASE, space)
    assert (filled.cpus_per_trial, filled.checkpoint_every) == (2.0, 3)
    assert filled.holdout_machines == ("valve",)
    assert filled.gpus_per_trial == RUN_DEFAULTS["gpus_per_trial"]


def test_a_flag_beats_the_space_even_when_it_is_zero_or_empty():
    space = _space(cpus_per_trial=2, validate_every=4, holdout_machines=["valve"])
    given = replace(BASE, cpus_per_trial=0.5, validate_every=0, holdout_machines=())
    filled = with_space_defaults(given, space)
    assert (filled.cpus_per_trial, filled.validate_every, filled.holdout_machines) == (0.5, 0, ())


def test_every_run_default_is_a_setting_and_a_space_key():
    fields = {f.name for f in dataclasses.fields(SweepSettings)}
    assert set(RUN_DEFAULTS) <= fields
    assert set(RUN_DEFAULTS) <= set(SWEEP_KEYS)
    # each one starts unset so that with_space_defaults can tell "not given" from a value
    assert all(getattr(BASE, key) is None for key in RUN_DEFAULTS)


def test_settings_are_frozen_and_default_to_the_work_folder():
    assert BASE.workdir == DEFAULT_WORKDIR == Path("asd-work")
    assert (BASE.experiment, BASE.model_name, BASE.resume, BASE.promote) == (
        "asd",
        "asd-encoder",
        False,
        False,
    )
    with pytest.raises(FrozenInstanceError):
        BASE.name = "x"  # type: ignore[misc]
