"""Promotion against a real local MLflow SQLite store: comparable, strictly better, race-safe."""

import contextlib
import threading

import pytest
from test_registry import fresh_name, logged_store, tags

from asd.serve import promotion, registry
from asd.serve.promotion import CLAIM_TAG, promote, reference_note
from asd.serve.registry import RegistryTags


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_encoder_file):
    return logged_store(tmp_path_factory, tiny_encoder_file)


def test_promote_better_refuse_worse(logged):
    uri, _, model_uri, _ = logged
    name = fresh_name()
    v1 = registry.register_encoder(uri, model_uri, name, tags(0.60))
    v2 = registry.register_encoder(uri, model_uri, name, tags(0.64))
    v3 = registry.register_encoder(uri, model_uri, name, tags(0.61))
    assert (v1, v2, v3) == ("1", "2", "3")

    first = promote(uri, name, v1)
    assert first.promoted and first.champion_version is None
    better = promote(uri, name, v2)
    assert better.promoted and better.champion_version == "1"
    assert registry.champion(uri, name).version == 2

    worse = promote(uri, name, v3)
    assert not worse.promoted
    assert worse.reason == (
        "candidate v3 hmean 0.61 does not beat champion v2 hmean 0.64 on data 1a2b3c4d "
        "(estimator ml)"
    )
    assert registry.champion(uri, name).version == 2
    assert not promote(uri, name, v2).promoted  # already champion


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
    assert promote(uri, name, v1).promoted
    decision = promote(uri, name, v2)
    assert not decision.promoted and decision.reason.startswith(reason)
    assert registry.champion(uri, name).version == 1


@pytest.mark.parametrize("with_lock", [True, False])
def test_racing_promotions_end_on_the_better(logged, monkeypatch, with_lock):
    """Without the sqlite file lock the claim/settle protocol alone must hold."""
    uri, _, model_uri, _ = logged
    if not with_lock:
        monkeypatch.setattr(promotion, "_local_lock", lambda *a: contextlib.nullcontext())
    for _ in range(2):
        name = fresh_name()
        old = registry.register_encoder(uri, model_uri, name, tags(0.50))
        good = registry.register_encoder(uri, model_uri, name, tags(0.70))
        best = registry.register_encoder(uri, model_uri, name, tags(0.80))
        assert promote(uri, name, old).promoted
        barrier, results = threading.Barrier(2), {}

        def run(version, name=name, barrier=barrier, results=results):
            barrier.wait()
            results[version] = promote(uri, name, version)

        threads = [threading.Thread(target=run, args=(v,)) for v in (good, best)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert registry.champion(uri, name).version == int(best)
        assert results[best].promoted


def test_promote_says_when_a_candidate_does_not_beat_the_reference(logged):
    uri, _, model_uri, _ = logged
    name = fresh_name()
    below = tags(0.60, metric="holdout.hmean", reference=0.65)
    v1 = registry.register_encoder(uri, model_uri, name, below)
    decision = promote(uri, name, v1)
    assert decision.promoted  # the registry's rule is unchanged: it only says so
    assert "does not beat the untrained reference (0.65, ml)" in decision.reason
    above = tags(0.70, metric="holdout.hmean", reference=0.65)
    v2 = registry.register_encoder(uri, model_uri, name, above)
    decision = promote(uri, name, v2)
    assert decision.promoted and "reference" not in decision.reason


def test_reference_note_needs_held_out_figures():
    assert reference_note(tags(0.1, metric="tune.hmean", reference=0.5), "1") == ""
    assert reference_note(tags(0.1, metric="holdout.hmean"), "1") == ""
    assert reference_note(tags(0.6, metric="holdout.hmean", reference=0.5), "1") == ""
    note = reference_note(tags(0.5, metric="holdout.hmean", reference=0.5), "3")
    assert note.startswith("note: v3 (holdout.hmean 0.5) does not beat")


def test_a_candidate_with_bad_tags_is_refused_in_one_line(logged):
    uri, tracker, model_uri, _ = logged
    name = fresh_name()
    version = registry.register_encoder(uri, model_uri, name, tags(0.5))
    tracker.client.set_model_version_tag(name, version, "metric_value", "high")
    decision = promote(uri, name, version)
    assert not decision.promoted
    assert decision.reason == f"candidate v{version}: tag metric_value must be a number, got 'high'"


def test_a_claim_is_bookkeeping_tags_do_not_copy(logged):
    uri, tracker, model_uri, _ = logged
    name = fresh_name()
    version = registry.register_encoder(uri, model_uri, name, tags(0.5))
    assert promote(uri, name, version).promoted
    mv = tracker.client.get_model_version(name, version)
    assert CLAIM_TAG in mv.tags  # stamped before the alias moved
    assert CLAIM_TAG not in RegistryTags.from_tags(mv.tags).to_tags()
