"""The detector as an MLflow pyfunc: a table of (machine, section, audio) in, scores out.

``mlflow models serve -m models:/asd-detector@champion --env-manager local`` loads it and
answers ``/invocations``; a bad row (unknown machine or section, bytes that are not audio,
NaN samples) is a 400 with one line naming the row. The model's only artifact is the detector
folder (:mod:`asd.detect.artifact`, no pickle) and the model is built from code
(:mod:`asd.serve.entry`), so nothing is unpickled; it needs ``asd`` installed where it is served.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.entities import LoggedModelOutput
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema

from asd.detect.artifact import Detector, load_detector
from asd.errors import AsdError, one_line
from asd.serve.audio import score_table
from asd.serve.registry import RegistryTags, register_encoder
from asd.tracking.model import pip_requirements
from asd.tracking.store import Store, param_value
from asd.tracking.uri import check_tracking

DETECTOR_MODEL = "asd-detector"
"""Registered model name of detectors (encoders are ``asd-encoder``)."""
ARTIFACT = "detector"
"""Name of the detector folder among the pyfunc model's artifacts."""
ENTRY = Path(__file__).with_name("entry.py")
"""The script MLflow runs to build the model (``set_model(DetectorModel())``)."""
EXPERIMENT = "asd-detectors"
"""Experiment of the runs that log detectors outside a sweep (`asd detector add-machine`)."""

SIGNATURE = ModelSignature(
    inputs=Schema(
        [ColSpec("string", "machine"), ColSpec("long", "section"), ColSpec("string", "audio")]
    ),
    outputs=Schema(
        [ColSpec("string", "machine"), ColSpec("long", "section"),
         ColSpec("double", "anomaly_score"), ColSpec("long", "decision"),
         ColSpec("double", "threshold"), ColSpec("double", "normal_z"), ColSpec("string", "note")]
    ),
)  # fmt: skip


class DetectorModel(PythonModel):
    """Pyfunc wrapper of a detector artifact: one row per clip in, one row of scores out."""

    def load_context(self, context: Any) -> None:
        """Load (and check) the detector folder once per process, on CPU."""
        self.detector: Detector = load_detector(context.artifacts[ARTIFACT], "cpu")

    def predict(self, context, model_input, params=None):  # hints: MLflow reads them
        """DataFrame (machine, section, audio: path or base64 wav) -> scores per row."""
        try:
            return score_table(self.detector, pd.DataFrame(model_input))
        except AsdError as err:  # a client's mistake: 400 with the one line
            raise MlflowException.invalid_parameter_value(str(err)) from None


def save_detector_model(local: Path, folder: Path, meta: Model | None = None) -> None:
    """Write the pyfunc model folder at ``local`` around the detector ``folder``."""
    with tempfile.TemporaryDirectory(prefix="asd-detector-") as tmp:
        named = Path(tmp) / ARTIFACT  # the artifact keeps its folder name inside the model
        shutil.copytree(folder, named)
        with warnings.catch_warnings():  # the signature is explicit: no example needed
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            mlflow.pyfunc.save_model(
                path=str(local),
                python_model=str(ENTRY),  # models from code: no pickle at all
                artifacts={ARTIFACT: str(named)},
                pip_requirements=[*pip_requirements(), "soundfile"],
                signature=SIGNATURE,
                metadata={"asd.python_model": "asd.serve.model.DetectorModel"},
                mlflow_model=meta,
            )


def log_detector(
    tracking_uri: str, folder: Path, run_id: str | None = None, name: str = "detector"
) -> str:
    """Log the detector ``folder`` as a pyfunc logged model; returns ``models:/<model_id>``.

    Without ``run_id`` a run of the ``asd-detectors`` experiment holds it. Built from client
    calls (as the encoder's logging is) so that it writes to ``tracking_uri``, whatever the
    process-wide tracking URI is.
    """
    check_tracking(tracking_uri)
    detector = load_detector(folder)
    store = Store(tracking_uri)
    client = store.client
    try:
        if run_id is None:
            run = client.create_run(store.experiment_id(EXPERIMENT), run_name="detector")
            run_id = run.info.run_id
            client.set_terminated(run_id)
        run = client.get_run(run_id)
        flat = {k: param_value(v)[:6000] for k, v in detector.config.to_flat().items()}
        model = client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=run_id, params=flat,
            tags={"asd.sections": ",".join(f"{m}/{s:02d}" for m, s in detector.sections())},
            model_type=DETECTOR_MODEL,
        )  # fmt: skip
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        meta = Model(artifact_path=model.artifact_location, run_id=run_id,
                     model_uuid=model.model_id, model_id=model.model_id)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="asd-detector-model-") as tmp:
            save_detector_model(Path(tmp) / "model", Path(folder), meta)
            client.log_model_artifacts(model.model_id, str(Path(tmp) / "model"))
        client.finalize_logged_model(model.model_id, "READY")
    except MlflowException as err:
        raise AsdError(f"cannot log detector {folder}: {one_line(err)}") from err
    return f"models:/{model.model_id}"


def register_detector(
    tracking_uri: str,
    folder: Path,
    tags: RegistryTags,
    name: str = DETECTOR_MODEL,
    run_id: str | None = None,
) -> str:
    """Log and register the detector ``folder`` as a version of ``name``; returns the version.

    ``tags`` are what promotion compares; the detector's own sections and description are
    added (replacing those of a parent version the tags were copied from).
    """
    detector = load_detector(folder)
    sections = ",".join(f"{m}/{s:02d}" for m, s in detector.sections())
    described = {"sections": sections, "detector": detector.describe()}
    tags = dataclasses.replace(tags, extra={**tags.extra, **described})
    return register_encoder(tracking_uri, log_detector(tracking_uri, folder, run_id), name, tags)
