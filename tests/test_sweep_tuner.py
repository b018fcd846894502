"""asd.sweep.tuner: what a sweep asks of Tune, built without starting Ray."""

from pathlib import Path

import pytest

from asd.config import Config
from asd.sweep.rows import OBJECTIVE
from asd.sweep.settings import SweepSettings
from asd.sweep.space import SearchSpace
from asd.sweep.trial import TrialSetup
from asd.sweep.tuner import (
    run_config,
    rung_epochs,
    scheduler,
    searcher,
    trial_resources,
    tune_config,
)

pytest.importorskip("ray.tune")


def _space(**sweep) -> SearchSpace:
    base = Config().with_overrides({"train.epochs": 4})
    return SearchSpace(name="s", base=base, params=(), sweep=sweep)


def _setup(workers=1, use_gpu=False) -> TrialSetup:
    return TrialSetup(
        base_config=Config(), features_path="f", tune_machines=("fan",), tracking_uri="u",
        experiment="asd", parent_run_id="p", sweep_id="s", data_fingerprint="x",
        journal_dir="j", workers_per_trial=workers, use_gpu=use_gpu,
    )  # fmt: skip


def _settings(**kw) -> SweepSettings:
    return SweepSettings(space=Path("s.yaml"), **kw)


def test_one_process_trial_reserves_its_cpus_and_gpus():
    settings = _settings(cpus_per_trial=2.0, gpus_per_trial=0.5)
    resources, cap = trial_resources(_space(max_concurrent_trials=3), settings, _setup())
    assert resources == {"cpu": 2.0, "gpu": 0.5} and cap == 3


def test_a_flag_caps_concurrency_over_the_space():
    settings = _settings(max_concurrent_trials=1)
    assert trial_resources(_space(max_concurrent_trials=3), settings, _setup())[1] == 1


def test_a_data_parallel_trial_asks_for_a_sliver_and_caps_by_worker_groups(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"GPU": 5})
    resources, cap = trial_resources(_space(), _settings(), _setup(workers=2, use_gpu=True))
    assert resources == {"cpu": 0.1} and cap == 2  # two whole groups of two GPUs


def test_asha_stops_by_epoch_within_the_space():
    asha = scheduler(_space(grace_period=9, reduction_factor=2))
    assert asha._time_attr == "epoch", "a trial reports only the epochs it validates"
    assert asha._max_t == 4 and asha._reduction_factor == 2
    assert min(asha._brackets[0]._rungs)[0] == 4, "the grace period never passes max_t"


def test_optuna_keeps_its_study_beside_the_sweep(tmp_path):
    search = searcher(_settings(seed=3), tmp_path / "records", "s1")
    assert search.metric == OBJECTIVE and search.mode == "max"
    assert (tmp_path / "records").is_dir()


def test_tune_config_maximises_the_objective_with_warm_workers(tmp_path):
    config = tune_config(_space(num_samples=5), _settings(), tmp_path, "s1", None)
    assert (config.metric, config.mode) == (OBJECTIVE, "max")
    assert config.num_samples == 5 and config.max_concurrent_trials == 1
    assert config.reuse_actors
    assert tune_config(_space(), _settings(num_samples=2), tmp_path, "s2", 4).num_samples == 2


def test_run_config_prints_one_line_per_trial_unless_verbose(tmp_path):
    from asd.sweep.console import TrialLines

    quiet = run_config(_space(), _settings(max_failures=2), str(tmp_path), "s1")
    assert quiet.name == "s1" and quiet.failure_config.max_failures == 2
    assert [type(c) for c in quiet.callbacks] == [TrialLines] and quiet.verbose == 0
    loud = run_config(_space(), _settings(verbose=True), str(tmp_path), "s1")
    assert loud.callbacks == [] and loud.verbose == 2


@pytest.mark.parametrize(
    "epochs, grace, factor, rungs",
    [(15, 5, 3, (5, 15)), (24, 2, 3, (2, 6, 18)), (4, 9, 2, (4,)), (10, 1, 2, (1, 2, 4, 8))],
)
def test_the_rung_epochs_are_ashas_own(epochs, grace, factor, rungs):
    space = SearchSpace(
        name="s", base=Config().with_overrides({"train.epochs": epochs}), params=(),
        sweep={"grace_period": grace, "reduction_factor": factor},
    )  # fmt: skip
    assert rung_epochs(space) == rungs
    asha = scheduler(space)
    assert tuple(sorted(m for m, _ in asha._brackets[0]._rungs)) == rungs
