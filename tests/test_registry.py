"""Registry and promotion against a real local MLflow SQLite store (one per module)."""

import json
import uuid

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from servers import free_port

from asd.errors import AsdError
from asd.serve import registry
from asd.serve.promotion import promote
from asd.serve.registry import RegistryTags, config_hash
from asd.tracking import Tracker, default_tracking_uri

N_MELS = 16


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_encoder_file):
    return logged_store(tmp_path_factory, tiny_encoder_file)


def logged_store(tmp_path_factory, tiny_encoder_file):
    """One store, one trial run, one logged encoder: (uri, tracker, model_uri, encoder path)."""
    root = tmp_path_factory.mktemp("registry")
    uri = default_tracking_uri(root)
    tracker = Tracker(uri, "registry-tests")
    sweep = tracker.start_sweep("sweep", {})
    trial = tracker.start_trial(sweep, "trial", {})
    path = tiny_encoder_file(
        root / "enc.pt",
        n_mels=N_MELS,
        embed_from="projection",
        normalization=(-40.0, 10.0),
        extra={"data_fingerprint": "abc"},
    )
    model_uri = tracker.log_encoder(trial, path)
    return uri, tracker, model_uri, path


def tags(value, data="1a2b3c4d", estimator="ml", metric="hmean", reference=None):
    return RegistryTags(
        metric=metric,
        metric_value=value,
        estimator=estimator,
        data_fingerprint=data,
        reference_metric_value=reference,
        extra={"sweep_id": "sweep", "trial_id": "trial", "config_hash": config_hash({"a": 1})},
    )


def fresh_name():
    return f"enc-{uuid.uuid4().hex[:8]}"


def test_no_champion_is_none(logged):
    assert registry.champion(logged[0], fresh_name()) is None


def test_tags_round_trip_and_name_a_bad_tag_in_one_line():
    typed = tags(0.6, reference=0.5)
    flat = typed.to_tags()
    assert (flat["metric_value"], flat["reference_metric_value"]) == ("0.600000", "0.500000")
    assert RegistryTags.from_tags(flat) == typed
    claimed = {**flat, "asd.promotion_claim": "champion@1"}  # bookkeeping is not copied
    assert RegistryTags.from_tags(claimed) == typed
    with pytest.raises(AsdError, match="^tags lack metric_value, data_fingerprint|^tags lack"):
        RegistryTags.from_tags({"metric": "hmean", "estimator": "ml"})
    for bad in ("high", "nan", ""):
        with pytest.raises(AsdError, match=f"^tag metric_value must be a number, got '{bad}'$"):
            RegistryTags.from_tags({**flat, "metric_value": bad})
    with pytest.raises(AsdError, match="^tag reference_metric_value must be a number"):
        RegistryTags.from_tags({**flat, "reference_metric_value": "x"})


def test_differs_from_names_the_first_incomparable_tag():
    assert tags(0.5).differs_from(tags(0.9)) == ""
    assert tags(0.5).differs_from(tags(0.5, data="ff")) == "data_fingerprint"
    assert tags(0.5).differs_from(tags(0.5, metric="pauc", estimator="knn")) == "metric"


def test_encoder_round_trip_and_pyfunc(logged, tmp_path):
    uri, tracker, model_uri, path = logged
    name = fresh_name()
    version = registry.register_encoder(uri, model_uri, name, tags(0.7))
    assert promote(uri, name, version).promoted

    pt = registry.download_champion(uri, name, tmp_path / "dl")
    assert pt.name == "encoder.pt" and pt.read_bytes() == path.read_bytes()
    encoder, cfg, extra = registry.load_champion(uri, name)
    assert cfg.features.n_mels == N_MELS and extra == {"data_fingerprint": "abc"}

    x = np.random.default_rng(0).normal(-40, 10, (3, N_MELS, 40)).astype(np.float32)
    with torch.no_grad():
        expected = encoder.embed(torch.from_numpy(x)).numpy()
    model_id = model_uri.removeprefix("models:/")
    model = mlflow.pyfunc.load_model(tracker.client.get_logged_model(model_id).artifact_location)
    out = model.predict(x)
    assert out.shape == (3, 8)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

    # the plain file is a run artifact too, and a repeated log_encoder reuses the model
    run_id = tracker.client.get_logged_model(model_id).source_run_id
    assert [a.path for a in tracker.client.list_artifacts(run_id, "encoder")] == [
        "encoder/encoder.pt"
    ]
    assert tracker.log_encoder(run_id, path) == model_uri


def test_a_version_links_its_logged_model_and_says_what_it_is(logged):
    uri, tracker, model_uri, _ = logged
    name = fresh_name()
    before = mlflow.get_tracking_uri()
    version = registry.register_encoder(uri, model_uri, name, tags(0.7), description="enc **A**")
    assert mlflow.get_tracking_uri() == before, "the process-wide URI is given back"
    mv = tracker.client.get_model_version(name, version)
    assert mv.source == model_uri and mv.description == "enc **A**"  # the UI's model link
    model_id = model_uri.removeprefix("models:/")
    listed = json.loads(tracker.client.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert {"name": name, "version": version} in listed
    registry.describe_model(uri, name, "what it is")
    assert tracker.client.get_registered_model(name).description == "what it is"


def test_download_without_champion_says_so(logged, tmp_path):
    with pytest.raises(AsdError, match="has no version with alias 'champion'"):
        registry.download_champion(logged[0], fresh_name(), tmp_path)


def test_offline_encoder_is_logged_on_sync(logged, tmp_path):
    from asd.tracking import sync_journal

    uri, _, _, path = logged
    down = f"http://127.0.0.1:{free_port()}"
    offline = Tracker(down, "registry-tests", journal_dir=tmp_path / "j", probe_timeout_s=0.5)
    run_id = offline.start_trial(logged[1].start_sweep("sweep", {}), "offline-trial", {})
    model_uri = offline.log_encoder(run_id, path)
    assert model_uri.startswith("models:/pending-")
    with pytest.raises(AsdError, match="run sync_journal first"):
        registry.register_encoder(uri, model_uri, fresh_name(), tags(0.5))
    assert sync_journal(tmp_path / "j", uri).replayed == 2
    run = logged[1].client.search_runs(
        [logged[1].client.get_experiment_by_name("registry-tests").experiment_id],
        "tags.`asd.trial_id` = 'offline-trial'",
    )[0]
    (output,) = run.outputs.model_outputs
    assert logged[1].client.get_logged_model(output.model_id).name == "model"
