"""Which MLflow tracking URIs can work, checked before anything starts (no MLflow import).

MLflow answers an unknown scheme or a malformed URI with a traceback from deep inside, and
silently creates an empty database for a ``sqlite:///`` path that does not exist yet: right
for a new sweep, wrong for `asd evaluate models:/...` or `asd promote`, which need the store
a sweep wrote.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from asd.errors import AsdError

SCHEMES = (
    "http", "https", "file", "sqlite", "postgresql", "mysql", "mssql",
    "databricks", "databricks-uc", "uc",
)  # fmt: skip
"""Tracking URI schemes MLflow serves (a database scheme may carry a driver: ``+psycopg2``)."""


def check_tracking_uri(uri: str, must_exist: bool = False) -> None:
    """AsdError in one line when ``uri`` cannot be an MLflow store.

    With ``must_exist``, also when the local store it names (sqlite file, file folder) is missing.
    """
    shown = _redact(uri)
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise AsdError(f"--tracking-uri {shown} is not a valid URI ({exc})") from None
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
        return Path(urlsplit(uri).path)
    return None


def _redact(uri: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` (never print a password)."""
    head, sep, rest = uri.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return uri
    return f"{head}://{creds.split(':', 1)[0]}:***@{host}"
