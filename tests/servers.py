"""Real server processes for tests, all on 127.0.0.1: MLflow, PostgreSQL, an S3-compatible store.

Each starter is a context manager that yields the server's address once it answers and stops
the process (its whole process group) on exit. They need only what `make install` puts in the
virtualenv (dev extra): `mlflow`, `pgserver` (PostgreSQL binaries in a wheel), `moto[server]`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a server or a client subprocess: ours, with the venv on PATH."""
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="disabled",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until ``url`` answers 200; fails if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout_s}s")


@contextmanager
def process(
    cmd: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """A server process in its own group, its output in ``log``; stopped on exit."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env or server_env(),
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)


@contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None) -> Iterator[str]:
    """`mlflow server` proxying artifacts to ``root/artifacts``; yields its http:// URI."""
    port = free_port()
    cmd = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", backend_uri or f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with process(cmd, root / "mlflow-server.log") as proc:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", proc)
        yield uri


@contextmanager
def postgres_server(root: Path, database: str = "mlflow") -> Iterator[str]:
    """A real PostgreSQL (binaries from the `pgserver` wheel) on a Unix socket in ``root``.

    Yields a SQLAlchemy URI for ``database`` (psycopg2). As root, pgserver runs the server as
    an unprivileged system user it creates, since PostgreSQL refuses to run as root.
    """
    import pgserver

    pgdata = root / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        server.psql(f"CREATE DATABASE {database};")
        yield server.get_uri(database).replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


@contextmanager
def s3_server(root: Path) -> Iterator[dict[str, str]]:
    """`moto_server` (an S3-compatible HTTP server) on 127.0.0.1; yields the AWS_* variables."""
    port = free_port()
    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with process(cmd, root / "moto.log") as proc:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(f"{endpoint}/moto-api/", proc, timeout_s=60)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@contextmanager
def optuna_dashboard(storage: str, root: Path) -> Iterator[str]:
    """`optuna-dashboard <storage>` on 127.0.0.1; yields its http:// URI once it serves."""
    port = free_port()
    cmd = [str(BIN / "optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)]
    with process(cmd, root / "optuna-dashboard.log") as proc:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/api/studies", proc, timeout_s=60)
        yield uri
