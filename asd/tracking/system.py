"""System metrics of a trial (CPU, memory, disk, network; GPU with nvidia-ml-py) in its MLflow run.

MLflow's own sampler (what ``log_system_metrics=True`` starts) runs in a thread beside
training and logs ``system/*`` metrics to the run, so a user can see whether a trial was
GPU-bound, starved for CPU or short of memory. It needs psutil (the ``sweep`` extra); GPU
figures appear where ``nvidia-ml-py`` is installed (the ``gpu`` extra) and a GPU is visible.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asd.tracking.journal import PENDING
from asd.tracking.uri import health_problem, is_http

log = logging.getLogger(__name__)

PROBE_S = 2.0
"""Seconds the health probe of an http tracking server may take before the closing flush."""


@contextmanager
def system_metrics(tracking_uri: str, run_id: str, interval_s: float) -> Iterator[None]:
    """Sample system metrics into ``run_id`` every ``interval_s`` while the block runs.

    Off when ``interval_s`` is 0 or the run is still pending (MLflow was down when it
    started: there is no run to write to). A block shorter than one interval still gets one
    sample, taken when it ends.
    """
    if interval_s <= 0 or run_id.startswith(PENDING):
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=interval_s, samples_before_logging=1, tracking_uri=tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        problem = health_problem(tracking_uri, PROBE_S) if is_http(tracking_uri) else None
        if problem is None:
            _close(monitor, run_id)
        else:
            # Flushing to a dead server retries for minutes, and the trial's thread must end
            # right after its last report (Tune reuses the actor for the next trial only if
            # it does): stop sampling in the background and drop what MLflow cannot take.
            log.warning("system metrics of run %s not flushed: MLflow %s", run_id, problem)
            monitor._shutdown_event.set()
            threading.Thread(target=monitor.finish, daemon=True).start()


def _close(monitor: Any, run_id: str) -> None:
    """Stop sampling and flush; one closing sample when none was published yet."""
    monitor.finish()
    if monitor._logging_step == 0:  # nothing published yet: log one closing sample
        try:
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as exc:  # a lost sample must never fail the trial
            log.warning("could not log system metrics for run %s: %s", run_id, exc)
