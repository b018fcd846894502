"""The MLflow adapter: applies journal operations to one store, the only code that writes.

Every call names its run id and its store through one explicit :class:`mlflow.MlflowClient`:
trials run concurrently (processes, sometimes threads), and the fluent API keeps one
process-wide tracking URI (its active run is per thread, but a logged model still resolves
through the global URI). Operations are keyed by name because the journal stores them by name;
:attr:`Store.operations` maps each name to the method that applies it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from asd.errors import AsdError
from asd.model.encoder import load_encoder
from asd.tracking.model import save_encoder_model
from asd.tracking.uri import sqlite_path

TAG_SWEEP = "asd.sweep_id"
"""Run tag naming the sweep a parent run belongs to (finds the run again on resume)."""
TAG_TRIAL = "asd.trial_id"
"""Run tag naming the trial a child run belongs to (finds the run again on retry)."""
TAG_PARENT = "mlflow.parentRunId"
"""MLflow's own tag that nests a child run under its parent in the UI."""
TAG_LOGGED = "mlflow.loggedArtifacts"
"""MLflow's run tag listing the run's table artifacts (what the UI opens as tables)."""
TAG_KIND = "mlflow.experimentKind"
"""MLflow's experiment tag choosing the UI's view of an experiment."""
KIND_TRAINING = "custom_model_development"
"""The value that opens an experiment as model training (runs, metrics), not GenAI traces."""
TAG_ENCODER_SHA = "asd.encoder_sha256"
"""Logged-model tag: content hash of the encoder file, so a replayed log_encoder is a no-op."""

ENCODER_DIR = "encoder"
"""Run artifact folder of the plain encoder file (rebuilt without unpickling anything)."""
ENCODER_FILE = "encoder.pt"
"""Name of the encoder file in the run artifacts (``encoder/encoder.pt``) and in the model."""

Resolve = Callable[[str], str]
"""Maps a run id, or a placeholder of a pending start, to the real run id."""


class Unresolved(Exception):
    """A placeholder run id whose start is still pending: the call must wait."""


def param_value(value: Any) -> str:
    """Strings as they are, everything else as JSON (lists and bools round-trip)."""
    return value if isinstance(value, str) else json.dumps(value)


class Store:
    """Applies journal operations to one MLflow store (``apply`` returns what the ack records).

    ``log_batch`` splits params, tags and metrics to MLflow's per-request limits itself.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        self._experiments: dict[str, str] = {}
        self.operations: dict[str, Callable[[dict, float, Resolve], dict]] = {
            "start_sweep": self.start_sweep,
            "start_trial": self.start_trial,
            "log_params": self.log_params,
            "set_tags": self.set_tags,
            "log_metrics": self.log_metrics,
            "log_artifact": self.log_artifact,
            "log_artifacts": self.log_artifacts,
            "log_table": self.log_table,
            "finish": self.finish,
            "log_encoder": self.log_encoder,
        }

    def apply(self, op: str, args: dict, ts: float, resolve: Resolve) -> dict:
        """Do one journalled operation; returns what the journal's ack records."""
        if op not in self.operations:
            raise AsdError(f"unknown journal operation {op!r}")
        return self.operations[op](args, ts, resolve)

    # -- runs
    def experiment_id(self, name: str) -> str:
        """Get or create the experiment, tagged to open as model training in MLflow's UI.

        A local sqlite store keeps artifacts beside the DB.
        """
        if name not in self._experiments:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                self._experiments[name] = self._create_experiment(name)
            else:
                if TAG_KIND not in exp.tags:  # made by an older asd: open it as training too
                    self.client.set_experiment_tag(exp.experiment_id, TAG_KIND, KIND_TRAINING)
                self._experiments[name] = exp.experiment_id
        return self._experiments[name]

    def _create_experiment(self, name: str) -> str:
        location = None
        db = sqlite_path(self.uri)
        if db is not None:
            slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            location = (db.parent / "mlartifacts" / slug).as_uri()
        try:
            return self.client.create_experiment(
                name, artifact_location=location, tags={TAG_KIND: KIND_TRAINING}
            )
        except MlflowException:  # another process created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _start(self, exp_id: str, filters: dict, run_name: str, args: dict, ts: float) -> dict:
        """Find the run by its tags or create it; returns the ack (placeholder -> run id)."""
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in filters.items())
        runs = self.client.search_runs(
            [exp_id], query, max_results=1, order_by=["attributes.start_time ASC"]
        )
        tags = {**args["tags"], **filters}
        if not runs:
            run = self.client.create_run(
                exp_id, start_time=int(ts * 1000), tags=tags, run_name=run_name
            )
        else:
            run = runs[0]
            self.client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
        self._log_params(run.info.run_id, args["params"])
        return {"ref": args["ref"], "run_id": run.info.run_id}

    def start_sweep(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """The sweep's parent run, found again by its sweep id."""
        exp_id = self.experiment_id(args["experiment"])
        return self._start(exp_id, {TAG_SWEEP: args["sweep_id"]}, args["sweep_id"], args, ts)

    def start_trial(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """A trial's child run, found again by its trial id under the same parent."""
        parent = resolve(args["parent"])
        exp_id = self.client.get_run(parent).info.experiment_id
        filters = {TAG_TRIAL: args["trial_id"], TAG_PARENT: parent}
        return self._start(exp_id, filters, args["trial_id"], args, ts)

    # -- writes to a run
    def log_params(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """Params; MLflow refuses to change a logged value."""
        self._log_params(resolve(args["run"]), args["params"])
        return {}

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])

    def set_tags(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """Tags; setting a tag again overwrites it."""
        tags = [RunTag(k, v) for k, v in args["tags"].items()]
        self.client.log_batch(resolve(args["run"]), tags=tags)
        return {}

    def log_metrics(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """Metrics with their original timestamps (a replay repeats nothing)."""
        metrics = [Metric(k, v, t, s) for k, v, t, s in args["metrics"]]
        self.client.log_batch(resolve(args["run"]), metrics=metrics)
        return {}

    def log_artifact(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """One file into the run's artifacts."""
        self.client.log_artifact(resolve(args["run"]), args["path"], args["artifact_path"])
        return {}

    def log_artifacts(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """A folder into the run's artifacts."""
        self.client.log_artifacts(resolve(args["run"]), args["dir"], args["artifact_path"])
        return {}

    def log_table(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """A table file (MLflow's JSON format) listed in the run's ``mlflow.loggedArtifacts``.

        Not ``client.log_table``: it appends to a table already there, so a replay would
        double its rows; this overwrites the file and lists it once.
        """
        run_id = resolve(args["run"])
        folder = args["artifact_file"].rpartition("/")[0] or None
        self.client.log_artifact(run_id, args["path"], folder)
        listed = json.loads(self.client.get_run(run_id).data.tags.get(TAG_LOGGED, "[]"))
        entry = {"path": args["artifact_file"], "type": "table"}
        if entry not in listed:
            self.client.set_tag(run_id, TAG_LOGGED, json.dumps([*listed, entry]))
        return {}

    def finish(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """End the run with the status and end time the tracker recorded."""
        run_id = resolve(args["run"])
        self.client.set_terminated(run_id, status=args["status"], end_time=args["end_time"])
        return {}

    # -- the encoder
    def log_encoder(self, args: dict, ts: float, resolve: Resolve) -> dict:
        """Log the encoder file as ``encoder/encoder.pt`` and as a pyfunc logged model.

        Built from client calls rather than ``mlflow.pyfunc.log_model``/``Model.log``: those
        take a ``run_id`` but create and upload the model through the process-wide tracking
        URI, which is not this store's when trials write to different stores.
        """
        run_id = resolve(args["run"])
        run = self.client.get_run(run_id)
        found = self._logged_encoder(run, args["name"], args["sha256"])
        if found is not None:
            return {"ref": args["ref"], "model_uri": found}  # a replay: already there
        path, sha = Path(args["path"]), args["sha256"]
        encoder, config, _ = load_encoder(path)
        with tempfile.TemporaryDirectory(prefix="asd-encoder-") as tmp:
            plain = Path(tmp) / "plain" / ENCODER_FILE
            plain.parent.mkdir()
            shutil.copyfile(path, plain)
            self.client.log_artifact(run_id, str(plain), ENCODER_DIR)
            model = self.client.create_logged_model(
                run.info.experiment_id,
                name=args["name"],
                source_run_id=run_id,
                tags={TAG_ENCODER_SHA: sha},
                params={k: param_value(v)[:6000] for k, v in config.to_flat().items()},
                model_type="asd-encoder",
            )
            self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
            meta = Model(
                artifact_path=model.artifact_location,
                run_id=run_id,
                model_uuid=model.model_id,
                model_id=model.model_id,
            )
            local = Path(tmp) / "model"
            save_encoder_model(local, plain, encoder.n_mels, encoder.embedding_dim, sha, meta)
            self.client.log_model_artifacts(model.model_id, str(local))
            self.client.finalize_logged_model(model.model_id, "READY")
        return {"ref": args["ref"], "model_uri": f"models:/{model.model_id}"}

    def _logged_encoder(self, run: Any, name: str, sha: str) -> str | None:
        """``models:/<id>`` of a READY model of this run with this name and hash, if any."""
        for output in (run.outputs.model_outputs if run.outputs else None) or []:
            model = self.client.get_logged_model(output.model_id)
            status = str(getattr(model.status, "name", model.status))
            if model.name == name and model.tags.get(TAG_ENCODER_SHA) == sha and "READY" in status:
                return f"models:/{model.model_id}"
        return None
