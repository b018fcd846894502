"""Tracking URIs: the default store, scheme and health checks.

MLflow answers an unknown scheme or a malformed URI with a traceback from deep inside, and
silently creates an empty database for a ``sqlite:///`` path that does not exist yet: right
for a new sweep, wrong for `asd evaluate models:/...` or `asd promote`, which need the store
a sweep wrote. ``check_tracking_uri`` says so in one line before anything starts.
"""

from __future__ import annotations

import base64
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow.exceptions import MlflowException

from asd.errors import AsdError, redact


def default_tracking_uri(workdir: Path) -> str:
    """``sqlite:///<abs workdir>/mlflow.db``: a database store, so the model registry works."""
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other schemes)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).resolve()


def is_http(uri: str) -> bool:
    """True for a tracking server (``http(s)://``), which has a ``/health`` endpoint."""
    return uri.startswith(("http://", "https://"))


SCHEMES = (
    "http", "https", "file", "sqlite", "postgresql", "mysql", "mssql",
    "databricks", "databricks-uc", "uc",
)  # fmt: skip
"""Tracking URI schemes MLflow serves (a database scheme may carry a driver: ``+psycopg2``)."""


def check_tracking_uri(uri: str, must_exist: bool = False) -> None:
    """AsdError in one line when ``uri`` cannot be an MLflow store.

    With ``must_exist``, also when the local store it names (sqlite file, file folder) is missing.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        shown = redact(uri)
    except ValueError as exc:
        raise AsdError(f"--tracking-uri {uri} is not a valid URI ({exc})") from None
    scheme = parts.scheme.split("+")[0].lower()
    if scheme not in SCHEMES:
        raise AsdError(
            f"--tracking-uri {shown}: unsupported scheme '{parts.scheme}' "
            f"(use one of {', '.join(SCHEMES)}, e.g. http://host:5000 or sqlite:///path/mlflow.db)"
        )
    if scheme in ("http", "https") and not parts.hostname:
        raise AsdError(f"--tracking-uri {shown} names no host")
    local = _local_path(uri, scheme)
    if must_exist and local is not None and not local.exists():
        raise AsdError(
            f"--tracking-uri {shown}: no MLflow store at {local} (MLflow would create an empty "
            "one); point it at the store the sweep wrote"
        )


def _local_path(uri: str, scheme: str) -> Path | None:
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise AsdError(f"--tracking-uri {uri}: a SQLite URI is sqlite:///<path to .db>")
        return Path(uri[len("sqlite:///") :])
    if scheme == "file":
        return Path(urllib.parse.urlsplit(uri).path)
    return None


def health_problem(uri: str, timeout_s: float) -> str | None:
    """Why ``<uri>/health`` does not answer 200 (``None`` when it does)."""
    parts = urllib.parse.urlsplit(uri)
    # urllib cannot take user:password@ in the host: send it as Basic auth instead.
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    bare = parts._replace(netloc=host)
    request = urllib.request.Request(urllib.parse.urlunsplit(bare).rstrip("/") + "/health")
    if parts.username is not None:
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout_s:g} s"
        if isinstance(reason, socket.gaierror):
            return "unknown host"
        return str(reason)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as err:
        return err.strerror or type(err).__name__


def check_tracking(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when the tracking store cannot be used.

    http(s): ``GET <uri>/health`` must answer within ``timeout_s``. sqlite: the database
    folder must exist and be writable (MLflow creates the file itself).
    """
    if is_http(uri):
        problem = health_problem(uri, timeout_s)
        if problem is not None:
            raise AsdError(
                f"cannot reach MLflow at {redact(uri)} ({problem}): "
                "start the server or pass --tracking-uri"
            )
        return
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent
        if not folder.is_dir():
            raise AsdError(f"MLflow database folder {folder} does not exist (from {uri})")
        if not os.access(folder, os.W_OK):
            raise AsdError(f"MLflow database folder {folder} is not writable (from {uri})")


def is_unavailable(err: BaseException) -> bool:
    """True for errors that mean 'the store is not there right now' (worth a replay later).

    MLflow's REST client turns connection failures into a bare MlflowException whose message
    starts 'API request to ... failed with exception'; a database server going away shows
    up as SQLAlchemy's OperationalError.
    """
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(err).__mro__}
    if names & {"OperationalError", "ConnectionError", "Timeout", "ChunkedEncodingError"}:
        return True
    if isinstance(err, MlflowException):
        text = str(err)
        if text.startswith("API request to") and "failed with" in text:
            return True
        return err.get_http_status_code() in (502, 503, 504)
    return False


TRAINING_VIEW = "workflowType=machine_learning"
"""The UI query that opens an experiment in the model-training view (runs, metrics).

MLflow 3.17's UI picks an experiment's view from the browser's own GenAI / Model training
switch (GenAI until a user flips it), not from the ``mlflow.experimentKind`` tag that
earlier 3.x UIs read; this query picks model training whatever the switch says.
"""


def ui_link(uri: str, experiment_id: str, run_id: str) -> str:
    """Where MLflow's UI shows a run, in the model-training view.

    For a local store, with the command that starts the UI on it first.
    """
    page = f"#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"
    if is_http(uri):
        parts = urllib.parse.urlsplit(uri)  # no credentials in a link
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        return f"{parts.scheme}://{host}{parts.path.rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} after `mlflow ui --backend-store-uri {uri}`"
