"""7. Sweep overhead: MLflow call latencies, then a real ``run_sweep`` on tiny data whose
phase timings (``SweepResult.phases``) and trials' own train/eval times give the cost of
Ray, Tune and MLflow per trial. Skipped with a note without the sweep extra."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from asd.config import Config
from asd.data.index import index_dataset
from asd.data.synth.tree import synthesize
from asd.features import extract_features
from benchmarks.harness import REPO, Bench, Row


def section(bench: Bench) -> list[Row]:
    """7. Ray + MLflow cost per trial against the training and evaluation the trials did."""
    try:
        import mlflow
        import optuna  # noqa: F401
        import ray
        import yaml  # noqa: F401

        from asd.sweep import runner
        from asd.sweep.settings import SweepSettings
        from asd.tracking import Tracker, default_tracking_uri
    except ImportError as exc:
        return [Row("sweep", "skipped", None, "", f"{exc.name} is not importable (sweep extra)")]
    from asd.sweep.space import load_space

    rows: list[Row] = []
    s = bench.sizes
    space_path = REPO / "search_spaces" / "smoke.yaml"
    with tempfile.TemporaryDirectory(prefix="asd-bench-sweep-") as tmp:
        work = Path(tmp)
        # -- MLflow calls on a fresh local store, measured directly
        uri = default_tracking_uri(work)
        start = time.perf_counter()
        tracker = Tracker(uri, "bench", journal_dir=work / "journal-bench")
        parent = tracker.start_sweep("bench", params={"space.x": "uniform[0, 1]"})
        first_s = time.perf_counter() - start
        calls: dict[str, list[float]] = {"start_trial": [], "log_metrics": [], "finish": []}
        metrics = {f"m{i}": float(i) for i in range(40)}  # ~ one epoch's row of a trial
        for trial in range(3):
            t0 = time.perf_counter()
            run = tracker.start_trial(parent, f"t{trial}", params=Config().to_flat())
            calls["start_trial"].append(time.perf_counter() - t0)
            for epoch in range(5):
                t0 = time.perf_counter()
                tracker.log_metrics(run, metrics, step=epoch)
                calls["log_metrics"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tracker.finish(run)
            calls["finish"].append(time.perf_counter() - t0)
        rows.append(
            Row(
                "sweep",
                "MLflow store creation + parent run",
                first_s,
                "s",
                "sqlite: schema migration on first use",
            )
        )
        for name, times in calls.items():
            rows.append(
                Row(
                    "sweep",
                    f"MLflow Tracker.{name}",
                    1000 * statistics.median(times),
                    "ms",
                    "median, journal on, local sqlite",
                )
            )

        # -- a real sweep: smoke space, tiny synthetic data, one trial at a time
        data = synthesize(
            work / "data",
            machines=("fan", "valve"),
            train_source=12,
            train_target=2,
            test_per_domain=3,
            seconds=2.0,
        )
        space = load_space(space_path)
        extract_features(
            index_dataset(data), space.base.features, work / "features", progress=False
        )  # cached: run_sweep's extraction becomes a hit
        start = time.perf_counter()
        start_ray()
        ray_init_s = time.perf_counter() - start
        settings = SweepSettings(
            space=space_path,
            data=data,
            workdir=work,
            num_samples=s.sweep_trials,
            max_concurrent_trials=1,
            device=bench.device.type,
            gpus_per_trial=1.0 if bench.cuda else 0.0,
        )
        log_file = work / "sweep.log"
        ray_log = logging.getLogger("ray")
        ray_level = ray_log.level
        try:
            ray_log.setLevel(logging.ERROR)  # Tune's progress lines would bury the table
            start = time.perf_counter()
            with (
                open(log_file, "w") as log,
                contextlib.redirect_stdout(log),
                contextlib.redirect_stderr(log),
            ):
                result = runner.run_sweep(settings)
            wall = time.perf_counter() - start
        finally:
            ray_log.setLevel(ray_level)
            ray.shutdown()
        client = mlflow.MlflowClient(tracking_uri=default_tracking_uri(work))
        exp = client.get_experiment_by_name(settings.experiment)
        assert exp is not None, "run_sweep created the experiment"
        runs = client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
        )
        train_s = sum(r.data.metrics.get("time.train_s", 0.0) for r in runs)
        eval_s = sum(r.data.metrics.get("time.eval_s", 0.0) for r in runs)
        trials = max(len(runs), 1)
        phases = result.phases
        tune_s = phases.get("tune", wall)
        overhead = tune_s - train_s - eval_s
        statuses = result.summary["status"].value_counts().to_dict() if len(result.summary) else {}
    per_trial = overhead / trials
    bench.measured["trial_overhead_s"] = per_trial
    rows += [
        Row("sweep", "Ray init (in-process)", ray_init_s, "s", f"num_cpus={os.cpu_count()}"),
        Row(
            "sweep",
            "run_sweep wall",
            wall,
            "s",
            f"smoke.yaml, {len(runs)} trials one at a time ({statuses}), 2 machine types",
        ),
        Row("sweep", "  Tune phase (tuner.fit)", tune_s, "s", "trials + Ray/Tune/MLflow in them"),
        Row(
            "sweep",
            "  trials' train + eval (their time.* metrics)",
            train_s + eval_s,
            "s",
            f"train {train_s:.1f} s + eval {eval_s:.1f} s, summed over trials",
        ),
        Row(
            "sweep",
            "  overhead per trial",
            per_trial,
            "s",
            "Tune scheduling, actor start (reused after the first), imports, MLflow run, "
            "checkpoints, final artifacts",
        ),
        Row(
            "sweep",
            "  overhead share of a 2-minute GPU trial",
            100 * per_trial / 120.0,
            "%",
            "target < 2 %",
        ),
        Row(
            "sweep",
            "  overhead share of the Tune phase",
            100 * overhead / tune_s,
            "%",
            "tiny trials: a 1-h trial would make this share ~0",
        ),
        Row(
            "sweep",
            "  register winner (log_encoder + registry)",
            phases.get("register"),
            "s",
            "once per sweep",
        ),
        Row(
            "sweep",
            "  setup (space, data, feature cache hit, parent run)",
            phases.get("setup"),
            "s",
            "once per sweep",
        ),
        Row(
            "sweep",
            "  finalise (summary, closing runs, summary table)",
            phases.get("finalise"),
            "s",
            "once per sweep",
        ),
    ]
    return rows


def start_ray() -> None:
    """A fresh in-process Ray with every core, unless one is already up in this process.

    ``address="local"``: without it ``ray.init`` follows ``RAY_ADDRESS`` or joins a cluster left
    running on this machine, and refuses ``num_cpus`` there (the section printed an error row).
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local", include_dashboard=False, log_to_driver=False, num_cpus=os.cpu_count()
        )
