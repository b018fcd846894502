"""Real server processes for tests: start one, wait until it answers, stop it.

MLflow (on SQLite or PostgreSQL), PostgreSQL itself (binaries from the `pgserver` wheel), an
S3-compatible store (`moto_server`) and `optuna-dashboard`, all on 127.0.0.1 and all from what
`make install` puts in the virtualenv. Each starter runs a process group
(``start_new_session``), so :func:`stop` also ends the server's own workers; the context
managers stop theirs on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
"""The virtualenv's bin folder: servers run from the same environment as the tests."""


def free_port() -> int:
    """A TCP port nothing listens on right now (closed again when this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
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
    env.update(extra)
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


def start_mlflow(root: Path, port: int, backend_uri: str | None = None) -> subprocess.Popen:
    """``mlflow server`` on ``root/mlflow.db`` (or ``backend_uri``) and ``root/artifacts``.

    Lean: one worker. Starting it again on the same ``root`` and ``port`` brings back the
    same store.
    """
    log = root / "server.log"
    backend = backend_uri or f"sqlite:///{root}/mlflow.db"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", backend,
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


@contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None) -> Iterator[str]:
    """:func:`start_mlflow` on a free port as a context manager; yields its http:// URI."""
    port = free_port()
    proc = start_mlflow(root, port, backend_uri)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextmanager
def postgres_server(root: Path, database: str = "mlflow") -> Iterator[str]:
    """A real PostgreSQL (binaries from the `pgserver` wheel) on a Unix socket in a temp folder.

    Yields a SQLAlchemy URI for ``database`` (psycopg2). As root, pgserver runs the server as
    an unprivileged system user it creates, since PostgreSQL refuses to run as root.
    """
    import pgserver

    # Its own folder outside pytest's (which another pytest session may lock down to its
    # owner, shutting out the unprivileged server user); ``root`` only names it in the logs.
    pgdata = Path(tempfile.mkdtemp(prefix="asd-pg-")) / "pgdata"
    pgdata.mkdir()
    (root / "pgdata.txt").write_text(str(pgdata))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        server.psql(f"CREATE DATABASE {database};")
        yield server.get_uri(database).replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@contextmanager
def _process(cmd: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """A server process in its own group, its output in ``log``; stopped on exit."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env(), start_new_session=True
        )
        try:
            yield proc
        finally:
            stop(proc)


@contextmanager
def s3_server(root: Path) -> Iterator[dict[str, str]]:
    """`moto_server` (an S3-compatible HTTP server) on 127.0.0.1; yields the AWS_* variables."""
    port = free_port()
    log = root / "moto.log"
    with _process([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log) as proc:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(f"{endpoint}/moto-api/", proc, log, timeout_s=60)
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
    log = root / "optuna-dashboard.log"
    cmd = [str(BIN / "optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)]
    with _process(cmd, log) as proc:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/api/studies", proc, log, timeout_s=60)
        yield uri
