"""Registry and promotion against a real local MLflow SQLite store (one per module)."""

import contextlib
import json
import threading
import uuid

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from servers import free_port

from asd.errors import AsdError
from asd.serve import registry
from asd.tracking import Tracker, default_tracking_uri

N_MELS = 16


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_encoder_file):
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


def tags(value, data="1a2b3c4d", estimator="ml", metric="hmean"):
    return {
        "metric": metric,
        "metric_value": value,
        "estimator": estimator,
        "data_fingerprint": data,
        "sweep_id": "sweep",
        "trial_id": "trial",
        "config_hash": registry.config_hash({"a": 1}),
    }


def fresh_name():
    return f"enc-{uuid.uuid4().hex[:8]}"


def test_no_champion_is_none(logged):
    assert registry.champion(logged[0], fresh_name()) is None


def test_register_requires_the_comparison_tags(logged):
    uri, _, model_uri, _ = logged
    with pytest.raises(AsdError, match="tags lack data_fingerprint"):
        registry.register_encoder(uri, model_uri, fresh_name(), {"metric": "hmean"})


def test_promote_better_refuse_worse(logged):
    uri, _, model_uri, _ = logged
    name = fresh_name()
    v1 = registry.register_encoder(uri, model_uri, name, tags(0.60))
    v2 = registry.register_encoder(uri, model_uri, name, tags(0.64))
    v3 = registry.register_encoder(uri, model_uri, name, tags(0.61))
    assert (v1, v2, v3) == ("1", "2", "3")

    first = registry.promote(uri, name, v1)
    assert first.promoted and first.champion_version is None
    better = registry.promote(uri, name, v2)
    assert better.promoted and better.champion_version == "1"
    assert registry.champion(uri, name).version == 2

    worse = registry.promote(uri, name, v3)
    assert not worse.promoted
    assert worse.reason == (
        "candidate v3 hmean 0.61 does not beat champion v2 hmean 0.64 on data 1a2b3c4d "
        "(estimator ml)"
    )
    assert registry.champion(uri, name).version == 2
    assert not registry.promote(uri, name, v2).promoted  # already champion


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"data": "ffff"}, "incomparable: data fingerprint differs"),
        ({"estimator": "elliptic"}, "incomparable: estimator differs"),
        ({"metric": "pauc"}, "incomparable: metric differs"),
    ],
)
def test_incomparable_is_refused(logged, changed, reason):
    uri, _, model_uri, _ = logged
    name = fresh_name()
    v1 = registry.register_encoder(uri, model_uri, name, tags(0.5))
    v2 = registry.register_encoder(uri, model_uri, name, tags(0.9, **changed))
    assert registry.promote(uri, name, v1).promoted
    decision = registry.promote(uri, name, v2)
    assert not decision.promoted and decision.reason.startswith(reason)
    assert registry.champion(uri, name).version == 1


@pytest.mark.parametrize("with_lock", [True, False])
def test_racing_promotions_end_on_the_better(logged, monkeypatch, with_lock):
    """Without the sqlite file lock the claim/settle protocol alone must hold."""
    uri, _, model_uri, _ = logged
    if not with_lock:
        monkeypatch.setattr(registry, "_local_lock", lambda *a: contextlib.nullcontext())
    for _ in range(2):
        name = fresh_name()
        old = registry.register_encoder(uri, model_uri, name, tags(0.50))
        good = registry.register_encoder(uri, model_uri, name, tags(0.70))
        best = registry.register_encoder(uri, model_uri, name, tags(0.80))
        assert registry.promote(uri, name, old).promoted
        barrier, results = threading.Barrier(2), {}

        def run(version, name=name, barrier=barrier, results=results):
            barrier.wait()
            results[version] = registry.promote(uri, name, version)

        threads = [threading.Thread(target=run, args=(v,)) for v in (good, best)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert registry.champion(uri, name).version == int(best)
        assert results[best].promoted


def test_encoder_round_trip_and_pyfunc(logged, tmp_path):
    uri, tracker, model_uri, path = logged
    name = fresh_name()
    version = registry.register_encoder(uri, model_uri, name, tags(0.7))
    assert registry.promote(uri, name, version).promoted

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


def test_promote_says_when_a_candidate_does_not_beat_the_reference(logged):
    uri, _, model_uri, _ = logged
    name = fresh_name()
    below = {**tags(0.60, metric="holdout.hmean"), "reference_metric_value": "0.65"}
    v1 = registry.register_encoder(uri, model_uri, name, below)
    decision = registry.promote(uri, name, v1)
    assert decision.promoted  # the registry's rule is unchanged: it only says so
    assert "does not beat the untrained reference (0.65, ml)" in decision.reason
    above = {**tags(0.70, metric="holdout.hmean"), "reference_metric_value": "0.65"}
    v2 = registry.register_encoder(uri, model_uri, name, above)
    decision = registry.promote(uri, name, v2)
    assert decision.promoted and "reference" not in decision.reason


def test_reference_note_needs_held_out_figures():
    assert registry.reference_note({"metric": "tune.hmean", "metric_value": "0.1"}, "1") == ""
    assert registry.reference_note({"metric": "holdout.hmean", "metric_value": "0.1"}, "1") == ""
    note = registry.reference_note(
        {"metric": "holdout.hmean", "metric_value": "0.5", "reference_metric_value": "0.5"}, "3"
    )
    assert note.startswith("note: v3 (holdout.hmean 0.5) does not beat")
