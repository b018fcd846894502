"""The encoder as an MLflow pyfunc model: log-mels in, embeddings out."""

from __future__ import annotations

import hashlib
import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import Schema, TensorSpec

from asd.model.encoder import load_encoder

REQUIREMENTS = ("torch", "torchaudio", "numpy", "pandas", "scikit-learn", "cloudpickle", "mlflow")
"""Packages pinned in the serving environment (explicit: skips MLflow's slow scan)."""


class EncoderModel(PythonModel):
    """Pyfunc wrapper of an asd encoder: log-mel ``(N, n_mels, frames)`` dB -> ``(N, d)``.

    The weights come from the plain encoder file (artifact ``encoder``), loaded with
    ``weights_only=True``; the pickled part is only this class, which needs ``asd``
    installed where the model is served.
    """

    batch_size = 64

    def load_context(self, context: Any) -> None:
        """Load the encoder once per process, on CPU."""
        self.encoder, self.config, _ = load_encoder(context.artifacts["encoder"], "cpu")
        self.encoder.eval()

    def predict(self, context, model_input: np.ndarray, params=None):  # hints: MLflow reads
        """(N, n_mels, frames) log-mel dB -> (N, d) float32 embeddings, in batches."""
        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim == 2:  # a single clip (n_mels, frames)
            x = x[None]
        out = []
        with torch.inference_mode():
            for start in range(0, len(x), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size]))
                out.append(self.encoder.embed(batch).float().numpy())  # (b, d)
        return np.concatenate(out) if out else np.zeros((0, self.encoder.embedding_dim), "f4")


def pip_requirements() -> list[str]:
    """Pinned requirements of the serving environment."""
    pins = []
    for package in REQUIREMENTS:
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def sha256(path: Path) -> str:
    """Content hash of a file (finds an already logged encoder again on replay)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_encoder_model(
    local: Path, encoder_file: Path, n_mels: int, dim: int, sha: str, meta: Model
) -> None:
    """Write the pyfunc model folder at ``local``, with an explicit tensor signature."""
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, n_mels, -1))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, dim))]),
    )
    with warnings.catch_warnings():  # the signature is explicit: no example needed
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        mlflow.pyfunc.save_model(
            path=str(local),
            python_model=EncoderModel(),
            artifacts={"encoder": str(encoder_file)},
            pip_requirements=pip_requirements(),
            signature=signature,
            metadata={"asd.python_model": "asd.tracking.EncoderModel", "asd.sha256": sha},
            mlflow_model=meta,
        )
