"""Real server processes for tests: start one, wait until it answers, stop it.

MLflow now; other servers (PostgreSQL, an S3-compatible store) belong here too. Each starter
returns the ``Popen`` of a process group (``start_new_session``), so :func:`stop` also ends
the server's own workers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
"""The virtualenv's bin folder: servers run from the same environment as the tests."""


def free_port() -> int:
    """A TCP port nothing listens on right now (closed again when this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The test's environment for a server, without a cluster or store it could join by mistake."""
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="disabled",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def wait_http(url: str, proc: subprocess.Popen, log: Path | None = None, timeout_s=120) -> None:
    """Wait until ``url`` answers 200; fail with the server's log tail if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log is not None else ""
            raise AssertionError(f"server exited with {proc.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout_s}s")


def start_mlflow(root: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` on ``root/mlflow.db`` and ``root/artifacts`` (lean: one worker).

    Starting it again on the same ``root`` and ``port`` brings back the same store.
    """
    log = root / "server.log"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=open(log, "a"), stderr=subprocess.STDOUT, env=server_env(),
        start_new_session=True,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health", proc, log)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """End a server's process group: SIGTERM, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue
