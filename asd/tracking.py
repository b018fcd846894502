"""MLflow tracking for sweeps: one parent run per sweep, one child run per trial.

Why :class:`mlflow.MlflowClient` only: trials run concurrently (processes, sometimes threads),
and MLflow's fluent API keeps one global active run and one global tracking URI. Every call
here names its run id and its store explicitly; even the encoder model is logged without
``mlflow.pyfunc.log_model`` (which has no ``run_id`` and reads the global URI): it is saved
with ``mlflow.pyfunc.save_model`` and uploaded as an MLflow 3 *logged model* linked to the run.

Why a write-ahead journal: a sweep runs for hours, the MLflow server may not. With
``journal_dir`` set, every write is appended to the journal *before* it is sent; if MLflow
cannot be reached the write stays pending, a warning is logged and training goes on.
:func:`sync_journal` replays what is pending once the server is back.

Journal format (one JSON object per line, ``<journal_dir>/<pid>-<8 hex>.jsonl``, one file per
:class:`Tracker`, append-only, flushed and fsync'ed line by line):

- intent: ``{"seq": 7, "ts": 1712345678.9, "op": "log_metrics", "args": {...}}``;
  ``op`` is one of ``start_sweep, start_trial, log_params, log_metrics, log_artifact,
  log_artifacts, set_tags, finish, log_encoder``. Args hold everything the call needs,
  metric timestamps included, so a replay writes exactly what the first attempt would have.
- done: ``{"ack": 7, "result": {...}}`` (applied; ``start_*`` results carry
  ``{"ref": "pending-<hex>", "run_id": "<real id>"}``, ``log_encoder`` ``model_uri``).
- failed: ``{"fail": 7, "error": "..."}``: MLflow rejected it for a reason a replay cannot
  fix (a changed param value, a missing file); it is never replayed.
- an intent with neither is *pending*. While a ``start_*`` call is pending, it returns a
  placeholder run id ``pending-<hex>`` that later calls (in any process sharing the journal
  folder) may use; a replay maps it to the real run id.
- ``<journal_dir>/blobs/<file stem>-<seq>/`` keeps a copy of the files of a pending
  ``log_artifact(s)``/``log_encoder`` (and every ``log_table`` CSV) so a replay still has them.

Replays are idempotent: runs are found again by their ``asd.sweep_id`` / ``asd.trial_id``
tags, params and tags are re-set to the same values, metrics carry their original timestamp
(MLflow drops exact duplicates), artifacts overwrite the same path, and a logged encoder is
found again by its content hash.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from asd.errors import AsdError

log = logging.getLogger(__name__)

TAG_SWEEP = "asd.sweep_id"
"""Run tag naming the sweep a parent run belongs to (finds the run again on resume)."""
TAG_TRIAL = "asd.trial_id"
"""Run tag naming the trial a child run belongs to (finds the run again on retry)."""
TAG_PARENT = "mlflow.parentRunId"
"""MLflow's own tag that nests a child run under its parent in the UI."""
TAG_ENCODER_SHA = "asd.encoder_sha256"
"""Logged-model tag: content hash of the encoder file, so a replayed log_encoder is a no-op."""

ENCODER_DIR = "encoder"
"""Run artifact folder of the plain encoder file (rebuilt without unpickling anything)."""
ENCODER_FILE = "encoder.pt"
"""Name of the encoder file in the run artifacts (``encoder/encoder.pt``) and in the model."""

STATUSES = ("FINISHED", "FAILED", "KILLED")
"""Terminal run statuses :meth:`Tracker.finish` accepts."""

MAX_METRICS_PER_BATCH = 1000
"""MLflow's log_batch limit for metrics per request."""
MAX_PARAMS_PER_BATCH = 100
"""MLflow's log_batch limit for params (and tags) per request."""

_PENDING = "pending-"
_REQUIREMENTS = ("torch", "torchaudio", "numpy", "pandas", "scikit-learn", "cloudpickle")


# --------------------------------------------------------------------------- URIs and health


def default_tracking_uri(workdir: Path) -> str:
    """``sqlite:///<abs workdir>/mlflow.db``: a database store, so the model registry works."""
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other schemes)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).resolve()


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _health_problem(uri: str, timeout_s: float) -> str | None:
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


def redact_uri(uri: str) -> str:
    """The URI with any password replaced by ``***``: safe for messages and logs."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    # user:password@ keeps the user; a lone token@ is the secret itself
    userinfo = f"{parts.username}:***" if parts.password is not None else "***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def check_tracking(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when the tracking store cannot be used.

    http(s): ``GET <uri>/health`` must answer within ``timeout_s``. sqlite: the database
    folder must exist and be writable (MLflow creates the file itself).
    """
    if _is_http(uri):
        problem = _health_problem(uri, timeout_s)
        if problem is not None:
            raise AsdError(
                f"cannot reach MLflow at {redact_uri(uri)} ({problem}): "
                "start the server or pass --tracking-uri"
            )
        return
    db = _sqlite_path(uri)
    if db is not None:
        folder = db.parent
        if not folder.is_dir():
            raise AsdError(f"MLflow database folder {folder} does not exist (from {uri})")
        if not os.access(folder, os.W_OK):
            raise AsdError(f"MLflow database folder {folder} is not writable (from {uri})")


def _is_unavailable(err: BaseException) -> bool:
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


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


# --------------------------------------------------------------------------- pyfunc model


class EncoderModel(PythonModel):
    """Pyfunc wrapper of an asd encoder: log-mel ``(N, n_mels, frames)`` dB -> ``(N, d)``.

    The weights come from the plain encoder file (artifact ``encoder``), loaded with
    ``weights_only=True``; the pickled part is only this class, which needs ``asd``
    installed where the model is served.
    """

    batch_size = 64

    def load_context(self, context: Any) -> None:
        """Load the encoder once per process, on CPU."""
        from asd.encoder import load_encoder

        self.encoder, self.config, _ = load_encoder(context.artifacts["encoder"], "cpu")
        self.encoder.eval()

    def predict(self, context, model_input: np.ndarray, params=None):  # hints: MLflow reads
        """(N, n_mels, frames) log-mel dB -> (N, d) float32 embeddings, in batches."""
        import torch

        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim == 2:  # a single clip (n_mels, frames)
            x = x[None]
        out = []
        with torch.inference_mode():
            for start in range(0, len(x), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size]))
                out.append(self.encoder.embed(batch).float().numpy())  # (b, d)
        return np.concatenate(out) if out else np.zeros((0, self.encoder.embedding_dim), "f4")


def _pip_requirements() -> list[str]:
    """Pinned requirements of the serving environment (explicit: skips MLflow's slow scan)."""
    pins = []
    for package in (*_REQUIREMENTS, "mlflow"):
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the store


def _param_value(value: Any) -> str:
    """Strings as they are, everything else as JSON (lists and bools round-trip)."""
    return value if isinstance(value, str) else json.dumps(value)


def _check_id(kind: str, value: str) -> str:
    if not value or "'" in value or "`" in value:
        raise AsdError(f"{kind} {value!r} must be non-empty and hold no quotes")
    return value


class _Unresolved(Exception):
    """A placeholder run id whose start is still pending: the call must wait."""


class _Store:
    """Applies journal operations to one MLflow store; the only code that writes to MLflow."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        self._experiments: dict[str, str] = {}

    # -- helpers
    def experiment_id(self, name: str) -> str:
        """Get or create the experiment; a local sqlite store keeps artifacts beside the DB."""
        if name in self._experiments:
            return self._experiments[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            db = _sqlite_path(self.uri)
            if db is not None:
                slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                location = (db.parent / "mlartifacts" / slug).as_uri()
            try:
                exp_id = self.client.create_experiment(name, artifact_location=location)
            except MlflowException as err:  # another process created it first
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise err
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        self._experiments[name] = exp_id
        return exp_id

    def _find_run(self, experiment_id: str, filters: dict[str, str]) -> Any:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in filters.items())
        runs = self.client.search_runs(
            [experiment_id], query, max_results=1, order_by=["attributes.start_time ASC"]
        )
        return runs[0] if runs else None

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        items = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH])

    def _start(self, exp_id: str, filters: dict, run_name: str, args: dict, ts: float) -> str:
        run = self._find_run(exp_id, filters)
        tags = {**args["tags"], **filters}
        if run is None:
            run = self.client.create_run(
                exp_id, start_time=int(ts * 1000), tags=tags, run_name=run_name
            )
        else:
            self._set_tags(run.info.run_id, tags)
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
        self._log_params(run.info.run_id, args["params"])
        return run.info.run_id

    # -- operations
    def apply(self, op: str, args: dict, ts: float, resolve: Callable[[str], str]) -> dict:
        """Do one journalled operation; returns what the journal's ack records."""
        if op == "start_sweep":
            exp_id = self.experiment_id(args["experiment"])
            run_id = self._start(exp_id, {TAG_SWEEP: args["sweep_id"]}, args["sweep_id"], args, ts)
            return {"ref": args["ref"], "run_id": run_id}
        if op == "start_trial":
            parent = resolve(args["parent"])
            exp_id = self.client.get_run(parent).info.experiment_id
            filters = {TAG_TRIAL: args["trial_id"], TAG_PARENT: parent}
            run_id = self._start(exp_id, filters, args["trial_id"], args, ts)
            return {"ref": args["ref"], "run_id": run_id}
        run_id = resolve(args["run"])
        if op == "log_params":
            self._log_params(run_id, args["params"])
        elif op == "set_tags":
            self._set_tags(run_id, args["tags"])
        elif op == "log_metrics":
            items = [Metric(k, v, t, s) for k, v, t, s in args["metrics"]]
            for i in range(0, len(items), MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])
        elif op == "log_artifact":
            self.client.log_artifact(run_id, args["path"], args["artifact_path"])
        elif op == "log_artifacts":
            self.client.log_artifacts(run_id, args["dir"], args["artifact_path"])
        elif op == "finish":
            self.client.set_terminated(run_id, status=args["status"], end_time=args["end_time"])
        elif op == "log_encoder":
            return {"ref": args["ref"], "model_uri": self.log_encoder(run_id, args)}
        else:
            raise AsdError(f"unknown journal operation {op!r}")
        return {}

    def log_encoder(self, run_id: str, args: dict) -> str:
        """Log the encoder file as ``encoder/encoder.pt`` and as a pyfunc logged model."""
        from mlflow.models import Model, ModelSignature
        from mlflow.types import Schema, TensorSpec

        from asd.encoder import load_encoder

        path, name = Path(args["path"]), args["name"]
        sha = args["sha256"]
        run = self.client.get_run(run_id)
        for output in (run.outputs.model_outputs if run.outputs else None) or []:
            model = self.client.get_logged_model(output.model_id)
            status = str(getattr(model.status, "name", model.status))
            if model.name == name and model.tags.get(TAG_ENCODER_SHA) == sha and "READY" in status:
                return f"models:/{model.model_id}"  # a replay: already there

        encoder, config, _ = load_encoder(path)
        with tempfile.TemporaryDirectory(prefix="asd-encoder-") as tmp:
            plain = Path(tmp) / "plain" / ENCODER_FILE
            plain.parent.mkdir()
            shutil.copyfile(path, plain)
            self.client.log_artifact(run_id, str(plain), ENCODER_DIR)

            model = self.client.create_logged_model(
                run.info.experiment_id,
                name=name,
                source_run_id=run_id,
                tags={TAG_ENCODER_SHA: sha},
                params={k: _param_value(v)[:6000] for k, v in config.to_flat().items()},
                model_type="asd-encoder",
            )
            self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
            signature = ModelSignature(
                inputs=Schema([TensorSpec(np.dtype("float32"), (-1, encoder.n_mels, -1))]),
                outputs=Schema([TensorSpec(np.dtype("float32"), (-1, encoder.embedding_dim))]),
            )
            meta = Model(
                artifact_path=model.artifact_location,
                run_id=run_id,
                model_uuid=model.model_id,
                model_id=model.model_id,
            )
            local = Path(tmp) / "model"
            with warnings.catch_warnings():  # the signature is explicit: no example needed
                warnings.filterwarnings("ignore", message=".*input example was not provided")
                mlflow.pyfunc.save_model(
                    path=str(local),
                    python_model=EncoderModel(),
                    artifacts={"encoder": str(plain)},
                    pip_requirements=_pip_requirements(),
                    signature=signature,
                    metadata={"asd.python_model": "asd.tracking.EncoderModel", "asd.sha256": sha},
                    mlflow_model=meta,
                )
            self.client.log_model_artifacts(model.model_id, str(local))
            self.client.finalize_logged_model(model.model_id, "READY")
        return f"models:/{model.model_id}"


# --------------------------------------------------------------------------- the journal


def _blob_dir(journal_file: Path, seq: int) -> Path:
    return journal_file.parent / "blobs" / f"{journal_file.stem}-{seq}"


def _with_blobs(journal_file: Path, entry: dict) -> dict:
    """Args of an entry with its local files pointed at the journal's copies, if any."""
    blob = _blob_dir(journal_file, entry["seq"])
    args = dict(entry["args"])
    if blob.is_dir():
        for key in ("path", "dir"):
            if key in args:
                args[key] = str(blob / Path(args[key]).name)
    return args


def _keep_blobs(journal_file: Path, entry: dict) -> None:
    """Copy the files a pending entry needs into the journal (the originals may go away)."""
    args = entry["args"]
    blob = _blob_dir(journal_file, entry["seq"])
    try:
        if "path" in args and Path(args["path"]).is_file() and not blob.is_dir():
            blob.mkdir(parents=True)
            shutil.copy2(args["path"], blob / Path(args["path"]).name)
        elif "dir" in args and Path(args["dir"]).is_dir() and not blob.is_dir():
            shutil.copytree(args["dir"], blob / Path(args["dir"]).name)
    except OSError as err:
        log.warning(
            "journal: could not keep a copy of %s: %s", args.get("path", args.get("dir")), err
        )


def _append(path: Path, record: dict) -> None:
    """One JSON line, flushed and fsync'ed: the journal must survive a crash right after."""
    line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _read_journal(path: Path) -> tuple[list[dict], dict[int, dict], set[int]]:
    """(intents in seq order, acks by seq, failed seqs); a torn last line is ignored."""
    intents, acks, failed = [], {}, set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "seq" in rec:
                intents.append(rec)
            elif "ack" in rec:
                acks[rec["ack"]] = rec.get("result") or {}
            elif "fail" in rec:
                failed.add(rec["fail"])
    intents.sort(key=lambda r: r["seq"])
    return intents, acks, failed


def _refs_in(journal_dir: Path) -> dict[str, str]:
    """Placeholder -> real run id, from every ack in the journal folder."""
    refs = {}
    for path in sorted(journal_dir.glob("*.jsonl")):
        for result in _read_journal(path)[1].values():
            if "ref" in result and "run_id" in result:
                refs[result["ref"]] = result["run_id"]
    return refs


# --------------------------------------------------------------------------- the tracker


class Tracker:
    """Writes a sweep's runs to MLflow through one explicit client (no global run state).

    Every method that writes returns at once if MLflow is down and a journal is set (the
    write stays pending; see the module docstring); without a journal it raises AsdError.
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
        self.store = _Store(tracking_uri)
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

    # -- public writes
    def start_sweep(
        self, sweep_id: str, params: dict[str, Any], tags: dict[str, Any] | None = None
    ) -> str:
        """Parent run of a sweep; resuming the same ``sweep_id`` reuses its run."""
        ref = _PENDING + uuid.uuid4().hex
        args = {
            "experiment": self.experiment,
            "sweep_id": _check_id("sweep id", sweep_id),
            "params": {k: _param_value(v) for k, v in params.items()},
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "ref": ref,
        }
        result = self._write("start_sweep", args)
        return result.get("run_id", ref)

    def start_trial(
        self,
        parent_run_id: str,
        trial_id: str,
        params: dict[str, Any],
        tags: dict[str, Any] | None = None,
    ) -> str:
        """Child run of a trial under the sweep's run; a retried trial reuses its run."""
        ref = _PENDING + uuid.uuid4().hex
        args = {
            "parent": parent_run_id,
            "trial_id": _check_id("trial id", trial_id),
            "params": {k: _param_value(v) for k, v in params.items()},
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "ref": ref,
        }
        result = self._write("start_trial", args)
        return result.get("run_id", ref)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Params (≤100 per request); MLflow refuses to change a logged value."""
        if params:
            args = {"run": run_id, "params": {k: _param_value(v) for k, v in params.items()}}
            self._write("log_params", args)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        """Metrics in log_batch requests of ≤1000; NaN/inf are skipped with a warning.

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

    def log_table(self, run_id: str, df: Any, artifact_file: str) -> None:
        """A DataFrame as a CSV artifact at ``artifact_file`` (e.g. ``tables/sections.csv``)."""
        folder, _, name = artifact_file.rpartition("/")
        with self._lock:
            if self.journal_file is not None:  # the CSV itself lives in the journal
                csv = _blob_dir(self.journal_file, self._seq + 1) / name
                csv.parent.mkdir(parents=True, exist_ok=True)
                df.to_csv(csv, index=False)
                self.log_artifact(run_id, csv, folder or None)
                return
        with tempfile.TemporaryDirectory(prefix="asd-table-") as tmp:
            csv = Path(tmp) / name
            df.to_csv(csv, index=False)
            self.log_artifact(run_id, csv, folder or None)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Tags (≤100 per request); setting a tag again overwrites it."""
        if tags:
            self._write("set_tags", {"run": run_id, "tags": {k: str(v) for k, v in tags.items()}})

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run as FINISHED, FAILED or KILLED."""
        if status not in STATUSES:
            raise AsdError(f"run status must be one of {', '.join(STATUSES)}, got {status!r}")
        args = {"run": run_id, "status": status, "end_time": int(time.time() * 1000)}
        self._write("finish", args)

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
        ref = _PENDING + uuid.uuid4().hex
        args = {
            "run": run_id,
            "path": str(path.resolve()),
            "name": name,
            "sha256": _sha256(path),
            "ref": ref,
        }
        result = self._write("log_encoder", args)
        return result.get("model_uri", f"models:/{ref}")

    # -- machinery
    def _resolve(self, ref: str) -> str:
        if not ref.startswith(_PENDING):
            return ref
        if ref not in self._refs and self.journal_dir is not None:
            self._refs.update(_refs_in(self.journal_dir))  # another process may have synced it
        if ref not in self._refs:
            raise _Unresolved(ref)
        return self._refs[ref]

    def _record(self, record: dict) -> None:
        if self.journal_file is not None:
            _append(self.journal_file, record)

    def _attempt(self, entry: dict) -> dict | None:
        """Apply one entry; ``None`` when MLflow is unavailable (the entry stays pending)."""
        try:
            result = self.store.apply(entry["op"], entry["args"], entry["ts"], self._resolve)
        except _Unresolved as err:
            if self.journal_file is None:
                raise AsdError(f"run {err} is only known to a tracking journal") from None
            return None
        except Exception as err:
            if self.journal_file is not None and _is_unavailable(err):
                return None
            self._record({"fail": entry["seq"], "error": _one_line(err)})
            if isinstance(err, AsdError):
                raise
            if _is_unavailable(err):
                raise AsdError(
                    f"lost MLflow at {redact_uri(self.tracking_uri)} during {entry['op']} "
                    f"({_one_line(err)}): pass a journal folder to keep training through outages"
                ) from err
            raise AsdError(f"MLflow refused {entry['op']}: {_one_line(err)}") from err
        if "ref" in result and "run_id" in result:
            self._refs[result["ref"]] = result["run_id"]
        self._record({"ack": entry["seq"], "result": result})
        return result

    def _reachable(self) -> bool:
        """A cheap health probe before talking to an http server, so an outage costs ~ms.

        Without it each call would sit in MLflow's own HTTP retries (minutes by default).
        Without a journal an outage raises AsdError here.
        """
        if not _is_http(self.tracking_uri):
            return True
        problem = _health_problem(self.tracking_uri, self.probe_timeout_s)
        if problem is not None and self.journal_file is None:
            raise AsdError(
                f"lost MLflow at {redact_uri(self.tracking_uri)} ({problem}): start the server, "
                "or pass a journal folder to keep training through outages"
            )
        return problem is None

    def _flush(self) -> bool:
        """Apply this tracker's pending entries in order; True when none are left."""
        while self._pending:
            entry = self._pending[0]
            entry = {**entry, "args": _with_blobs(self.journal_file, entry)}  # type: ignore[arg-type]
            try:
                if self._attempt(entry) is None:
                    return False
            except AsdError as err:
                log.warning("journal: dropping %s #%d: %s", entry["op"], entry["seq"], err)
            self._pending.pop(0)
        return True

    def _write(self, op: str, args: dict) -> dict:
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "ts": time.time(), "op": op, "args": args}
            self._record(entry)
            if self.journal_file is None:
                self._reachable()
                return self._attempt(entry) or {}
            result = None
            if self._reachable() and self._flush():  # keep the order: older writes first
                result = self._attempt(entry)
            if result is None:
                if not self._pending:
                    log.warning(
                        "MLflow at %s unavailable: journalling to %s; replay with sync_journal",
                        redact_uri(self.tracking_uri),
                        self.journal_file,
                    )
                _keep_blobs(self.journal_file, entry)  # type: ignore[arg-type]
                self._pending.append(entry)
                return {}
            return result


# --------------------------------------------------------------------------- replay


@dataclasses.dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_journal` did."""

    replayed: int
    """Pending entries applied now."""
    skipped: int
    """Entries already applied (or failed) earlier: nothing to do."""
    failed: int = 0
    """Entries MLflow refused during this replay (recorded, never retried)."""


def sync_journal(journal_dir: Path, tracking_uri: str) -> SyncReport:
    """Replay every pending journal entry in ``journal_dir`` into ``tracking_uri``, in order.

    Idempotent: each applied entry gets an ack line, so a second sync replays nothing; and
    the operations themselves are safe to repeat (see the module docstring). Files are
    replayed one after the other in name order, each in its own sequence order; a
    placeholder run id from another file is resolved by applying that file's start first.
    Run it when no tracker is writing to the folder (after the sweep, or before resuming).
    """
    journal_dir = Path(journal_dir)
    if not journal_dir.is_dir():
        raise AsdError(f"no journal folder at {journal_dir}")
    check_tracking(tracking_uri)
    store = _Store(tracking_uri)
    files = sorted(journal_dir.glob("*.jsonl"))
    state = {path: _read_journal(path) for path in files}
    refs: dict[str, str] = {}
    starts: dict[str, tuple[Path, dict]] = {}  # placeholder -> its pending start entry
    for path, (intents, acks, failed) in state.items():
        for result in acks.values():
            if "ref" in result and "run_id" in result:
                refs[result["ref"]] = result["run_id"]
        for entry in intents:
            seq = entry["seq"]
            if entry["op"].startswith("start_") and seq not in acks and seq not in failed:
                starts[entry["args"]["ref"]] = (path, entry)

    counts = {"replayed": 0, "skipped": 0, "failed": 0}
    done: set[tuple[Path, int]] = set()

    def apply(path: Path, entry: dict) -> None:
        key = (path, entry["seq"])
        if key in done:
            return
        done.add(key)
        try:
            result = store.apply(entry["op"], _with_blobs(path, entry), entry["ts"], resolve)
        except _Unresolved as err:
            _append(path, {"fail": entry["seq"], "error": f"unknown run {err}"})
            counts["failed"] += 1
            return
        except Exception as err:
            if _is_unavailable(err):
                raise AsdError(
                    f"lost MLflow at {redact_uri(tracking_uri)} while replaying {path.name} "
                    f"#{entry['seq']} ({_one_line(err)}): run the sync again later"
                ) from err
            log.warning("journal: MLflow refused %s #%d: %s", entry["op"], entry["seq"], err)
            _append(path, {"fail": entry["seq"], "error": _one_line(err)})
            counts["failed"] += 1
            return
        if "ref" in result and "run_id" in result:
            refs[result["ref"]] = result["run_id"]
        _append(path, {"ack": entry["seq"], "result": result})
        counts["replayed"] += 1

    def resolve(ref: str) -> str:
        if not ref.startswith(_PENDING):
            return ref
        if ref not in refs and ref in starts:
            apply(*starts[ref])  # a start from another file (or later in this one) first
        if ref not in refs:
            raise _Unresolved(ref)
        return refs[ref]

    for path, (intents, acks, failed) in state.items():
        for entry in intents:
            if entry["seq"] in acks or entry["seq"] in failed:
                counts["skipped"] += 1
            else:
                apply(path, entry)
    return SyncReport(**counts)
