"""The encoder as a pyfunc model: saved with its signature, served back as the encoder embeds."""

import hashlib
import importlib.metadata

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow.models import Model

from asd.model.encoder import load_encoder
from asd.tracking.model import (
    REQUIREMENTS,
    EncoderModel,
    pip_requirements,
    save_encoder_model,
    sha256,
)


def test_sha256_is_the_files_content_hash(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000  # over one read chunk
    path.write_bytes(data)
    assert sha256(path) == hashlib.sha256(data).hexdigest()


def test_requirements_pin_the_installed_versions():
    pins = pip_requirements()
    assert [pin.split("==")[0] for pin in pins] == list(REQUIREMENTS)
    assert f"torch=={importlib.metadata.version('torch')}" in pins


@pytest.fixture(scope="module")
def saved(tiny_encoder_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    path = tiny_encoder_file(folder / "encoder.pt")
    encoder, _, _ = load_encoder(path, "cpu")
    dims = encoder.n_mels, encoder.embedding_dim
    save_encoder_model(folder / "model", path, *dims, sha256(path), Model())
    return path, folder / "model"


def test_the_model_declares_its_tensor_signature_and_hash(saved):
    path, local = saved
    meta = Model.load(local / "MLmodel")
    (inputs,) = meta.signature.inputs.inputs
    (outputs,) = meta.signature.outputs.inputs
    assert (inputs.shape, inputs.type) == ((-1, 16, -1), np.dtype("float32"))
    dim = load_encoder(path, "cpu")[0].embedding_dim
    assert (outputs.shape, outputs.type) == ((-1, dim), np.dtype("float32"))
    assert meta.metadata["asd.sha256"] == sha256(path)


def test_the_served_model_embeds_as_the_encoder_does_in_batches(saved):
    path, local = saved
    encoder, _, _ = load_encoder(path, "cpu")
    encoder.eval()
    x = np.random.default_rng(0).normal(-40, 10, size=(5, 16, 24)).astype(np.float32)
    with torch.inference_mode():
        expected = encoder.embed(torch.from_numpy(x)).numpy()  # (5, d)
    served = mlflow.pyfunc.load_model(str(local))
    np.testing.assert_allclose(served.predict(x), expected, rtol=1e-4, atol=1e-5)
    python_model = served.unwrap_python_model()
    python_model.batch_size = 2  # three batches: 2 + 2 + 1
    np.testing.assert_allclose(python_model.predict(None, x), expected, rtol=1e-4, atol=1e-5)
    one = python_model.predict(None, x[0])  # a single (n_mels, frames) clip
    np.testing.assert_allclose(one, expected[:1], rtol=1e-4, atol=1e-5)
    empty = python_model.predict(None, np.zeros((0, 16, 24), np.float32))
    assert empty.shape == (0, expected.shape[1]) and empty.dtype == np.float32
    assert isinstance(python_model, EncoderModel)
