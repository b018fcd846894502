"""Tracking URIs (asd/tracking/uri.py): a bad store is named in one line before anything starts."""

import http.server
import os
import socket
import threading

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2 as codes

from asd.errors import AsdError
from asd.tracking.uri import (
    TRAINING_VIEW,
    check_tracking,
    check_tracking_uri,
    default_tracking_uri,
    health_problem,
    is_unavailable,
    sqlite_path,
    ui_link,
)


def test_the_default_store_is_an_absolute_sqlite_file_in_the_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = default_tracking_uri(tmp_path.relative_to(tmp_path) / "work")
    assert uri == f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}"
    assert sqlite_path(uri) == tmp_path / "work" / "mlflow.db"
    assert sqlite_path("http://h:5000") is None


@pytest.mark.parametrize(
    "uri",
    ["http://h:5000", "https://u:p@h/mlflow", "sqlite:////tmp/x.db", "postgresql+psycopg2://h/db",
     "file:///tmp/mlruns", "databricks://profile"],
)  # fmt: skip
def test_stores_mlflow_serves_pass(uri):
    check_tracking_uri(uri)


@pytest.mark.parametrize(
    "uri, message",
    [
        ("ftp://h/x", "unsupported scheme 'ftp'"),
        ("mlruns", "unsupported scheme ''"),
        ("http://:5000", "names no host"),
        ("sqlite://rel.db", "a SQLite URI is sqlite:///<path to .db>"),
        ("http://[::1", "is not a valid URI"),
    ],
)
def test_stores_mlflow_cannot_serve_are_refused(uri, message):
    with pytest.raises(AsdError, match=message):
        check_tracking_uri(uri)


def test_a_store_that_must_exist_is_looked_for_and_credentials_are_masked(tmp_path):
    db = tmp_path / "mlflow.db"
    with pytest.raises(AsdError, match="would create an empty one"):
        check_tracking_uri(f"sqlite:///{db}", must_exist=True)
    db.write_bytes(b"")
    check_tracking_uri(f"sqlite:///{db}", must_exist=True)
    check_tracking_uri(f"file://{tmp_path}", must_exist=True)
    with pytest.raises(AsdError) as err:
        check_tracking_uri("ftp://alice:s3cret@h/x")
    assert "s3cret" not in str(err.value)


def test_a_sqlite_store_needs_a_writable_folder(tmp_path):
    check_tracking(default_tracking_uri(tmp_path))
    with pytest.raises(AsdError, match="does not exist"):
        check_tracking(f"sqlite:///{tmp_path / 'no' / 'mlflow.db'}")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anyway
            with pytest.raises(AsdError, match="is not writable"):
                check_tracking(f"sqlite:///{locked / 'mlflow.db'}")
    finally:
        locked.chmod(0o700)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Health.seen, _Health.status = [], 200
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_health_asks_the_server_and_sends_credentials_as_basic_auth(health_server):
    assert health_problem(health_server, 2.0) is None
    host = health_server.removeprefix("http://")
    assert health_problem(f"http://bob:pw@{host}/", 2.0) is None
    assert _Health.seen == [("/health", None), ("/health", "Basic Ym9iOnB3")]  # bob:pw
    _Health.status = 503
    assert health_problem(health_server, 2.0) == "HTTP 503"
    with pytest.raises(AsdError, match=r"cannot reach MLflow at .* \(HTTP 503\)"):
        check_tracking(f"http://bob:pw@{host}")
    with pytest.raises(AsdError) as err:
        check_tracking(f"http://bob:pw@{host}")
    assert "pw@" not in str(err.value)


def test_a_closed_port_is_a_refused_connection():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert health_problem(f"http://127.0.0.1:{port}", 2.0) == "connection refused"


def test_only_errors_of_an_absent_store_are_worth_a_replay():
    class OperationalError(Exception):  # SQLAlchemy's name, matched by name
        pass

    assert is_unavailable(ConnectionRefusedError()) and is_unavailable(TimeoutError())
    assert is_unavailable(OperationalError("db went away"))
    assert is_unavailable(MlflowException("API request to http://h/api failed with exception x"))
    assert is_unavailable(MlflowException("busy", error_code=codes.TEMPORARILY_UNAVAILABLE))
    assert is_unavailable(MlflowException("slow", error_code=codes.DEADLINE_EXCEEDED))
    assert not is_unavailable(MlflowException("no run", error_code=codes.RESOURCE_DOES_NOT_EXIST))
    assert not is_unavailable(ValueError("a bug"))


def test_ui_links_open_the_training_view_without_credentials():
    link = ui_link("https://u:secret@h:8443/mlflow/", "3", "abc")
    assert link == f"https://h:8443/mlflow/#/experiments/3/runs/abc?{TRAINING_VIEW}"
    local = ui_link("sqlite:////w/mlflow.db", "1", "r")
    assert local.startswith(f"http://127.0.0.1:5000/#/experiments/1/runs/r?{TRAINING_VIEW}")
    assert local.endswith("`mlflow ui --backend-store-uri sqlite:////w/mlflow.db`")
