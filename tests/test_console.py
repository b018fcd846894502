"""The sweep's console: one line per trial event, from a real (tiny) Ray Tune run."""

import pytest

from asd.errors import AsdError
from asd.sweep.console import TrialLines

pytestmark = pytest.mark.slow


def _trainable(config):
    from ray import tune

    if config["fail"]:
        raise AsdError("loss became NaN")
    for epoch in range(1, config["train.epochs"] + 1):
        tune.report({"val_hmean": 0.5 + epoch / 10, "epoch": epoch})


def test_one_line_per_trial_event(tmp_path):
    import sys

    import ray
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    lines: list[str] = []
    tuner = tune.Tuner(
        _trainable,
        param_space={"fail": tune.grid_search([False, True]), "train.epochs": 3},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="lines",
            verbose=0,
            callbacks=[TrialLines(base_epochs=3, emit=lines.append)],
        ),
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
    )
    tuner.fit()
    ok, bad = (sorted(line for line in lines if tid in line) for tid in _ids(lines))
    assert len(ok) == 1 + 3 + 1, ok  # started, three epochs, finished
    assert any("epoch 2/3 val_hmean 0.7" in line for line in ok)
    assert any("finished: val_hmean 0.8" in line for line in ok)
    assert len(bad) == 2 and any(line.endswith("AsdError: loss became NaN") for line in bad), bad
    assert all("\n" not in line for line in lines)


def _ids(lines):
    started = [line.split()[1] for line in lines if " started" in line]
    finished = {line.split()[1] for line in lines if " finished" in line}
    return sorted(started, key=lambda tid: tid not in finished)
