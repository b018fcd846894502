"""The sweep's Ray Tune experiment: resources, Optuna TPE, ASHA, run config, fit or restore.

Each piece is built by a plain function from the search space and the settings, so what a
sweep asks of Tune can be checked without a Ray cluster (``tests/test_sweep_tuner.py``);
:func:`run_tune` puts them together and runs the experiment to its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from asd.errors import AsdError
from asd.sweep.rows import EPOCH, OBJECTIVE
from asd.sweep.settings import SweepSettings
from asd.sweep.space import SearchSpace
from asd.sweep.trial import TrialSetup, run_trial

if TYPE_CHECKING:
    from ray import tune
    from ray.tune import Result
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

# Ray, Optuna and the Tune console callback (a ray.tune.Callback) are imported where they are
# used: the driver imports this module before Ray starts.

MODE = "max"
"""The objective (:data:`asd.sweep.rows.OBJECTIVE`) is an hmean: higher is better."""


def run_tune(
    space: SearchSpace,
    settings: SweepSettings,
    setup: TrialSetup,
    storage: str,
    name: str,
    records: Path,
) -> list[Result]:
    """Start or restore the Tune experiment, run it to the end; one result per trial."""
    from ray import tune

    sweep_uri = f"{storage}/{name}"
    resources, max_concurrent = trial_resources(space, settings, setup)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources)
    if settings.resume:
        if not tune.Tuner.can_restore(sweep_uri):
            raise AsdError(f"sweep '{name}' in {storage} cannot be restored (no Tune state)")
        tuner = tune.Tuner.restore(sweep_uri, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=space.to_tune(),
            tune_config=tune_config(space, settings, records, name, max_concurrent),
            run_config=run_config(space, settings, storage, name),
        )
    grid = tuner.fit()
    return [grid[i] for i in range(len(grid))]


def trial_resources(
    space: SearchSpace, settings: SweepSettings, setup: TrialSetup
) -> tuple[dict[str, float], int | None]:
    """What Tune reserves for one trial, and the cap on trials at once (None: the space's)."""
    resources = {"cpu": settings.cpus_per_trial or 1.0, "gpu": settings.gpus_per_trial or 0.0}
    max_concurrent = settings.max_concurrent_trials or space.sweep.get("max_concurrent_trials")
    if setup.workers_per_trial > 1:
        # The trial function only waits on its Ray Train workers, whose placement group holds
        # the CPUs and GPUs; Tune refuses 0, so it asks for a sliver. Without a cap, idle
        # drivers would pile up: run as many trials as there are whole worker groups.
        resources = {"cpu": 0.1}
        if max_concurrent is None and setup.use_gpu:
            import ray

            gpus = int(ray.cluster_resources().get("GPU", 0))
            max_concurrent = max(1, gpus // setup.workers_per_trial)
    return resources, max_concurrent


def tune_config(
    space: SearchSpace,
    settings: SweepSettings,
    records: Path,
    name: str,
    max_concurrent: int | None,
) -> tune.TuneConfig:
    """Optuna TPE proposes, ASHA stops weak trials early, trials share warm workers."""
    from ray import tune

    return tune.TuneConfig(
        metric=OBJECTIVE,
        mode=MODE,
        search_alg=searcher(settings, records, name),
        scheduler=scheduler(space),
        num_samples=settings.num_samples or space.sweep.get("num_samples", 8),
        max_concurrent_trials=max_concurrent or 1,
        # one warm worker process runs trial after trial: torch, MLflow and the
        # compile cache are loaded once per worker, not once per trial
        reuse_actors=True,
    )


def _asha(space: SearchSpace) -> tuple[int, int, int]:
    """(grace period, reduction factor, most epochs) of the space's ASHA."""
    most = space.max_epochs
    grace = min(space.sweep.get("grace_period", 1), most)
    return grace, space.sweep.get("reduction_factor", 3), most


def rung_epochs(space: SearchSpace) -> tuple[int, ...]:
    """The epochs at which ASHA compares trials: grace x factor^k up to the most epochs.

    A trial validates at these (and at its checkpoints and last epoch) only: ASHA reads the
    objective nowhere else, and an estimate every epoch cost more than the training.
    """
    grace, factor, most = _asha(space)
    rungs, epoch = [], grace
    while epoch <= most:
        rungs.append(epoch)
        epoch *= max(factor, 2)
    return tuple(rungs)


def scheduler(space: SearchSpace) -> ASHAScheduler:
    """ASHA over the rows' epochs (a trial reports only at those it validates)."""
    from ray.tune.schedulers import ASHAScheduler

    grace, factor, most = _asha(space)
    return ASHAScheduler(
        time_attr=EPOCH, max_t=most, grace_period=grace, reduction_factor=factor
    )


def searcher(settings: SweepSettings, records: Path, name: str) -> OptunaSearch:
    """Optuna TPE with its study in SQLite in ``records``, where `optuna-dashboard` reads it."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    records.mkdir(parents=True, exist_ok=True)
    if not settings.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created ..."
    return OptunaSearch(
        metric=OBJECTIVE,
        mode=MODE,
        study_name=name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{records / f'{name}.optuna.db'}"),
        seed=settings.seed,
    )


def run_config(
    space: SearchSpace, settings: SweepSettings, storage: str, name: str
) -> tune.RunConfig:
    """Where Tune keeps the sweep, how often a trial is retried, what the console shows."""
    from ray import tune

    from asd.sweep.console import TrialLines  # a ray.tune.Callback: imports Ray

    return tune.RunConfig(
        name=name,
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=2 if settings.verbose else 0,
        callbacks=[] if settings.verbose else [TrialLines(space.base.train.epochs)],
    )
