"""The Tracker: a sweep's writes to MLflow, journalled so an outage costs no training."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import mlflow

from asd.errors import AsdError, one_line, redact
from asd.tracking.journal import (
    PENDING,
    Outcome,
    append,
    apply_entry,
    blob_dir,
    keep_blobs,
    refs_in,
)
from asd.tracking.model import sha256
from asd.tracking.store import ENCODER_DIR, Store, Unresolved, param_value
from asd.tracking.uri import health_problem, is_http

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

STATUSES = ("FINISHED", "FAILED", "KILLED")
"""Terminal run statuses :meth:`Tracker.finish` accepts."""


def _check_id(kind: str, value: str) -> str:
    if not value or "'" in value or "`" in value:
        raise AsdError(f"{kind} {value!r} must be non-empty and hold no quotes")
    return value


class Tracker:
    """Writes a sweep's runs to MLflow through one explicit client (no global run state).

    Every method that writes returns at once if MLflow is down and a journal is set (the
    write stays pending; see :mod:`asd.tracking.journal`); without a journal it raises AsdError.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        journal_dir: Path | None = None,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.probe_timeout_s = probe_timeout_s
        self.store = Store(tracking_uri)
        self.journal_dir = Path(journal_dir) if journal_dir is not None else None
        self.journal_file: Path | None = None
        if self.journal_dir is not None:
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            self.journal_file = self.journal_dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._seq = 0
        self._pending: list[dict] = []
        self._refs: dict[str, str] = {}
        self._lock = threading.RLock()

    @property
    def client(self) -> mlflow.MlflowClient:
        """The MlflowClient bound to this tracker's store (for reads)."""
        return self.store.client

    @property
    def pending(self) -> int:
        """How many journalled writes wait for MLflow to come back."""
        return len(self._pending)

    # -- runs
    def start_sweep(
        self, sweep_id: str, params: dict[str, Any], tags: dict[str, Any] | None = None
    ) -> str:
        """Parent run of a sweep; resuming the same ``sweep_id`` reuses its run."""
        ids = {"experiment": self.experiment, "sweep_id": _check_id("sweep id", sweep_id)}
        return self._start("start_sweep", ids, params, tags)

    def start_trial(
        self,
        parent_run_id: str,
        trial_id: str,
        params: dict[str, Any],
        tags: dict[str, Any] | None = None,
    ) -> str:
        """Child run of a trial under the sweep's run; a retried trial reuses its run."""
        ids = {"parent": parent_run_id, "trial_id": _check_id("trial id", trial_id)}
        return self._start("start_trial", ids, params, tags)

    def _start(
        self, op: str, ids: dict[str, str], params: dict[str, Any], tags: dict[str, Any] | None
    ) -> str:
        """The run id, or a ``pending-<hex>`` placeholder while MLflow is away."""
        ref = PENDING + uuid.uuid4().hex
        args = {
            **ids,
            "params": {k: param_value(v) for k, v in params.items()},
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "ref": ref,
        }
        return self._write(op, args).get("run_id", ref)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run as FINISHED, FAILED or KILLED."""
        if status not in STATUSES:
            raise AsdError(f"run status must be one of {', '.join(STATUSES)}, got {status!r}")
        args = {"run": run_id, "status": status, "end_time": int(time.time() * 1000)}
        self._write("finish", args)

    # -- params, tags, metrics
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Params; MLflow refuses to change a logged value."""
        if params:
            args = {"run": run_id, "params": {k: param_value(v) for k, v in params.items()}}
            self._write("log_params", args)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Tags; setting a tag again overwrites it."""
        if tags:
            self._write("set_tags", {"run": run_id, "tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        """Metrics (MLflow splits them into requests of ≤1000); NaN/inf are skipped with a warning.

        Pass ``step=epoch`` so a retried trial overwrites rather than duplicates history.
        """
        now = int(time.time() * 1000)
        rows = []
        for key, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                log.warning("not logging metric %s=%s (run %s): not finite", key, value, run_id)
                continue
            rows.append([key, value, now, int(step or 0)])
        if rows:
            self._write("log_metrics", {"run": run_id, "metrics": rows})

    # -- files
    def log_artifact(self, run_id: str, path: Path | str, artifact_path: str | None = None) -> None:
        """One local file into the run's artifacts (under ``artifact_path``)."""
        path = Path(path)
        if not path.is_file():
            raise AsdError(f"no file to log at {path}")
        args = {"run": run_id, "path": str(path.resolve()), "artifact_path": artifact_path}
        self._write("log_artifact", args)

    def log_artifacts(self, run_id: str, dir: Path | str, artifact_path: str | None = None) -> None:
        """Every file under a local folder into the run's artifacts."""
        dir = Path(dir)
        if not dir.is_dir():
            raise AsdError(f"no folder to log at {dir}")
        args = {"run": run_id, "dir": str(dir.resolve()), "artifact_path": artifact_path}
        self._write("log_artifacts", args)

    def log_table(self, run_id: str, df: pd.DataFrame, artifact_file: str) -> None:
        """A DataFrame as an artifact at ``artifact_file`` (``tables/sections.json``).

        ``.json`` is MLflow's table format (the UI shows it; ``mlflow.load_table`` reads
        it), ``.csv`` a plain CSV file.
        """
        folder, _, name = artifact_file.rpartition("/")
        if not name.endswith((".json", ".csv")):
            raise AsdError(f"table artifact {artifact_file!r} must end in .json or .csv")
        with self._lock:
            if self.journal_file is not None:  # the file itself lives in the journal
                path = blob_dir(self.journal_file, self._seq + 1) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                self._log_table_file(run_id, df, path, artifact_file)
                return
        with tempfile.TemporaryDirectory(prefix="asd-table-") as tmp:
            self._log_table_file(run_id, df, Path(tmp) / name, artifact_file)

    def _log_table_file(
        self, run_id: str, df: pd.DataFrame, path: Path, artifact_file: str
    ) -> None:
        if path.suffix == ".csv":
            df.to_csv(path, index=False)
            self.log_artifact(run_id, path, artifact_file.rpartition("/")[0] or None)
            return
        df.to_json(path, orient="split", index=False)
        args = {"run": run_id, "path": str(path.resolve()), "artifact_file": artifact_file}
        self._write("log_table", args)

    def log_encoder(self, run_id: str, encoder_path: Path | str, name: str = "model") -> str:
        """The encoder as a pyfunc model (``models:/<model_id>``) and as ``encoder/encoder.pt``.

        The model's ``predict`` maps log-mels ``(N, n_mels, frames)`` float32 to ``(N, d)``.
        While MLflow is down it returns ``models:/pending-<hex>``. ``name`` must not be
        ``encoder``: MLflow 3 lists a logged model's files under ``runs:/<run>/<name>/``, which
        would shadow the plain ``encoder/`` folder (and resolve through the global URI).
        """
        path = Path(encoder_path)
        if not path.is_file():
            raise AsdError(f"no encoder file to log at {path}")
        if name == ENCODER_DIR:
            raise AsdError(f"model name '{name}' would shadow the run's {ENCODER_DIR}/ folder")
        ref = PENDING + uuid.uuid4().hex
        args = {"run": run_id, "path": str(path.resolve()), "name": name}
        args |= {"sha256": sha256(path), "ref": ref}
        return self._write("log_encoder", args).get("model_uri", f"models:/{ref}")

    def run_id(self, ref: str) -> str:
        """The real run id of ``ref``: a placeholder from an outage is looked up in the journal.

        Raises :class:`Unresolved` while its start is still pending (MLflow not synced yet).
        """
        return self._resolve(ref)

    # -- machinery
    def _resolve(self, ref: str) -> str:
        if not ref.startswith(PENDING):
            return ref
        if self.journal_dir is None:
            raise AsdError(f"run {ref} is only known to a tracking journal")
        if ref not in self._refs:
            self._refs.update(refs_in(self.journal_dir))  # another process may have synced it
        if ref not in self._refs:
            raise Unresolved(ref)
        return self._refs[ref]

    def _apply(self, entry: dict) -> Outcome:
        return apply_entry(self.store, self.journal_file, entry, self._refs, self._resolve)

    def _raise(self, entry: dict, outcome: Outcome) -> NoReturn:
        """Without a journal nothing can wait; a refused write always raises."""
        err = outcome.error
        assert err is not None  # apply_entry names why an entry is pending or failed
        if isinstance(err, AsdError):
            raise err
        if outcome.state == "pending":
            raise AsdError(
                f"lost MLflow at {redact(self.tracking_uri)} during {entry['op']} "
                f"({one_line(err)}): pass a journal folder to keep training through outages"
            ) from err
        raise AsdError(f"MLflow refused {entry['op']}: {one_line(err)}") from err

    def _reachable(self) -> bool:
        """A cheap health probe before talking to an http server, so an outage costs ~ms.

        Not left to the first failed request: MLflow's client retries a refused connection
        ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (7) times with exponential backoff, minutes per
        write. Without a journal an outage raises AsdError here.
        """
        if not is_http(self.tracking_uri):
            return True
        problem = health_problem(self.tracking_uri, self.probe_timeout_s)
        if problem is not None and self.journal_file is None:
            raise AsdError(
                f"lost MLflow at {redact(self.tracking_uri)} ({problem}): start the server, "
                "or pass a journal folder to keep training through outages"
            )
        return problem is None

    def _flush(self) -> bool:
        """Apply this tracker's pending entries in order; True when none are left."""
        while self._pending:
            entry = self._pending[0]
            outcome = self._apply(entry)
            if outcome.state == "pending":
                return False
            if outcome.state == "failed":
                log.warning(
                    "journal: dropping %s #%d: %s", entry["op"], entry["seq"], outcome.error
                )
            self._pending.pop(0)
        return True

    def _write(self, op: str, args: dict) -> dict:
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "ts": time.time(), "op": op, "args": args}
            append(self.journal_file, entry)
            if self.journal_file is None:
                self._reachable()
                outcome = self._apply(entry)
            elif self._reachable() and self._flush():  # keep the order: older writes first
                outcome = self._apply(entry)
            else:
                outcome = Outcome("pending")
            if outcome.state == "done":
                return outcome.result
            if outcome.state == "failed" or self.journal_file is None:
                self._raise(entry, outcome)
            self._keep(entry, self.journal_file)
            return {}

    def _keep(self, entry: dict, journal_file: Path) -> None:
        """Leave the entry pending, with copies of its files, until MLflow is back."""
        if not self._pending:
            log.warning(
                "MLflow at %s unavailable: journalling to %s; replay with sync_journal",
                redact(self.tracking_uri),
                journal_file,
            )
        keep_blobs(journal_file, entry)
        self._pending.append(entry)
