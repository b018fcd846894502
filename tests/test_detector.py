"""The detector: members (frames -> pool -> scorer), ensembles, the references beside them."""

import numpy as np
import pandas as pd
import pytest
import torch

from asd.config import Config, EncoderConfig, FeatureConfig
from asd.detect.detector import (
    combine,
    detector_spec,
    evaluate_detector,
    evaluate_reference,
    machine_comparison,
    reported_scorers,
)
from asd.detect.standardise import section_stats
from asd.errors import AsdError
from asd.features import FeatureSet
from asd.model.encoder import Encoder

N_MELS = 16


def _feature_set(n_train=30, n_test=8, seed=0, anomaly="spectral"):
    """Two machines; anomalies: louder upper bands ('spectral') or a one-frame burst ('event')."""
    rng = np.random.default_rng(seed)
    rows, mels = [], []
    for machine in ("fan", "valve"):
        specs = [
            ("train", "normal", "source" if i < n_train - 4 else "target") for i in range(n_train)
        ]
        specs += [
            ("test", label, dom)
            for dom in ("source", "target")
            for label in ("normal", "anomaly")
            for _ in range(n_test)
        ]
        for split, label, domain in specs:
            frames = 40 + rng.integers(0, 5)
            mel = rng.normal(size=(N_MELS, frames))
            if label == "anomaly" and anomaly == "spectral":
                mel[N_MELS // 2 :] += 1.5
            elif label == "anomaly":  # a short event: invisible to a 40-frame mean
                mel[:3, rng.integers(0, frames)] += 5.0  # one frame, three bands
            mels.append(mel.astype(np.float32))
            rows.append((f"{machine}_{len(rows)}.wav", machine, 0, domain, split, label))
    index = pd.DataFrame(rows, columns=["clip", "machine", "section", "domain", "split", "label"])
    index["subset"] = "dev_data"
    return FeatureSet.from_arrays(mels, index, FeatureConfig(n_mels=N_MELS))


@pytest.fixture(scope="module")
def features():
    return _feature_set()


@pytest.fixture(scope="module")
def events():
    return _feature_set(anomaly="event")


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return Encoder(EncoderConfig(width=8), N_MELS).eval()


def _cfg(**overrides):
    return Config().with_overrides({f"scoring.{k}": v for k, v in overrides.items()})


def test_reference_family_needs_no_encoder_and_reports_both_references(features):
    evaluation = evaluate_detector(None, features, _cfg(family="reference"))
    assert set(evaluation.by_estimator) == {"ml", "elliptic"}
    assert set(evaluation.companions) == {"reference", "reference_meanstd"}
    flat = evaluation.metrics()
    for scorer in ("ml", "elliptic"):
        assert flat[f"{scorer}.hmean"] == flat[f"reference.{scorer}.hmean"]
        stronger = max(flat[f"reference.{scorer}.hmean"], flat[f"reference_meanstd.{scorer}.hmean"])
        assert flat[f"vs_reference.{scorer}.hmean"] == pytest.approx(
            flat[f"{scorer}.hmean"] - stronger
        )
    assert flat["ml.hmean"] > 0.9  # the louder upper bands are a spectral anomaly
    assert evaluation.description == "logmel/mean/ml"
    with pytest.raises(AsdError, match="needs an encoder"):
        evaluate_detector(None, features, Config())


def test_max_pooling_sees_short_events_that_the_mean_hides(events):
    mean = evaluate_detector(None, events, _cfg(family="reference", reference="mean"))
    peak = evaluate_detector(None, events, _cfg(family="reference", reference="max"))
    assert peak.by_estimator["ml"].summary["hmean"] > 0.9
    assert mean.by_estimator["ml"].summary["hmean"] < 0.75


def test_max_of_z_ensemble_keeps_both_kinds_of_anomaly(features, events):
    cfg = _cfg(family="ensemble", members=["logmel/mean", "logmel/max"], combine="max")
    for data in (features, events):
        ev = evaluate_detector(None, data, cfg, estimators=("ml",))
        best_member = max(m.by_estimator["ml"].summary["hmean"] for m in ev.members.values())
        assert ev.by_estimator["ml"].summary["hmean"] > best_member - 0.1
    table = machine_comparison(ev, "ml")
    assert list(table.index) == ["fan", "valve"]
    assert {"member logmel/mean", "member logmel/max", "reference"} <= set(table.columns)
    assert ev.description == "max of z over logmel/mean/ml, logmel/max/ml"


def test_combined_scores_are_z_scores_of_out_of_fold_training_scores(features):
    cfg = _cfg(family="ensemble", members=["logmel/mean", "logmel/max"], combine="max")
    ev = evaluate_detector(None, features, cfg, estimators=("ml",))
    parts = [ev.members[name].by_estimator["ml"] for name in ("logmel/mean", "logmel/max")]
    z = []
    for part in parts:
        stats = section_stats(part.train_scores)
        res = part.results
        keys = zip(res["machine"], res["section"], strict=True)
        mean, std = np.array([stats[(m, int(s))] for m, s in keys]).T
        z.append((res["anomaly_score"].to_numpy() - mean) / std)
    np.testing.assert_allclose(ev.by_estimator["ml"].results["anomaly_score"], np.max(z, axis=0))
    train = ev.by_estimator["ml"].train_scores[("fan", 0)]
    assert len(train) == 30
    thresholds = ev.by_estimator["ml"].results.groupby("machine")["threshold"].first()
    assert thresholds["fan"] == pytest.approx(np.quantile(train, 0.9))


def test_combine_mean_is_weighted_and_unknown_rules_are_refused():
    from asd.detect.detector import MemberScores

    key = ("fan", 0)
    meta = pd.DataFrame({"machine": ["fan"], "section": [0]})
    a = MemberScores(np.array([3.0]), {key: np.array([0.0, 2.0])}, {key: 1.0}, {})
    b = MemberScores(np.array([0.0]), {key: np.array([1.0, 3.0])}, {key: 1.0}, {})
    scores, _, _ = combine([a, b], (0.75, 0.25), "mean", meta, 0.9)
    assert scores[0] == pytest.approx(0.75 * 2.0 + 0.25 * -2.0)
    with pytest.raises(AsdError, match="combine"):
        combine([a, b], (1, 1), "median", meta, 0.9)


def test_a_member_with_its_own_scorer_keeps_it_under_every_estimator(features):
    cfg = _cfg(family="ensemble", members=["logmel/max/gmm", "logmel/mean"])
    ev = evaluate_detector(None, features, cfg, estimators=("ml", "elliptic"), companions=False)
    gmm = ev.members["logmel/max/gmm"]
    assert gmm.by_estimator["ml"].results["anomaly_score"].equals(
        gmm.by_estimator["elliptic"].results["anomaly_score"]
    )
    assert ev.companions == {}


@pytest.mark.parametrize("family", ["encoder", "fusion"])
def test_encoder_families_report_the_encoder_and_both_references(
    features, encoder, family, tmp_path
):
    cfg = _cfg(family=family, fusion_weight=0.3)
    evaluation = evaluate_detector(
        encoder, features, cfg, estimators=("ml", "knn"), out_dir=tmp_path, device="cpu"
    )
    assert set(evaluation.companions) == {"reference", "reference_meanstd", "encoder"}
    if family == "encoder":
        flat = evaluation.metrics()
        assert flat["ml.hmean"] == flat["encoder.ml.hmean"]
    assert (tmp_path / "ml" / "anomaly_score_fan_section_00_test.csv").is_file()
    if family == "fusion":
        assert evaluation.description.startswith("weighted mean of z: 0.3*encoder/own")


def test_fusion_with_weight_zero_ranks_like_the_reference(features, encoder):
    cfg = _cfg(family="fusion", fusion_weight=0.0)
    evaluation = evaluate_detector(encoder, features, cfg, estimators=("ml",), device="cpu")
    fused = evaluation.by_estimator["ml"].results
    ref = evaluation.companions["reference"].by_estimator["ml"].results
    for machine in ("fan", "valve"):
        a = fused.loc[fused["machine"] == machine, "anomaly_score"].to_numpy()
        b = ref.loc[ref["machine"] == machine, "anomaly_score"].to_numpy()
        assert np.array_equal(np.argsort(a), np.argsort(b))


def test_encoder_frames_take_any_pooling(features, encoder):
    cfg = _cfg(family="encoder", pool="max")
    ev = evaluate_detector(encoder, features, cfg, estimators=("ml",), device="cpu")
    assert ev.description == "encoder/max/ml"
    assert ev.by_estimator["ml"].summary["hmean"] > 0


def test_cache_reuses_untrained_members_and_gives_the_same_result(features):
    cfg = _cfg(family="reference", reference="p90")
    cache = {}
    first = evaluate_detector(None, features, cfg, estimators=("ml",), cache=cache)
    assert len(cache) == 3  # the detector and both references
    second = evaluate_detector(None, features, cfg, estimators=("ml",), cache=cache)
    assert first.metrics() == second.metrics() and len(cache) == 3


def test_reported_scorers_are_the_papers_two_and_the_configured_one():
    assert reported_scorers(Config()) == ("ml", "elliptic")
    assert reported_scorers(_cfg(estimator="gmm")) == ("ml", "elliptic", "gmm")
    assert detector_spec(_cfg(family="ensemble", members=["logmel/max"]).scoring).combine == "max"


def test_bad_member_specs_are_refused_by_the_config():
    for bad, why in [
        (["wav/max"], "frames"),
        (["logmel/own"], "own"),
        (["logmel/max/svm"], "scorer"),
        (["logmel/median"], "pooling"),
    ]:
        with pytest.raises(AsdError, match=why):
            _cfg(family="ensemble", members=bad)
    with pytest.raises(AsdError, match="members is empty"):
        _cfg(family="ensemble")


def test_reference_on_a_machine_subset_uses_the_same_clips(features):
    evaluation = evaluate_reference(features, Config(), ("ml",), machines=("fan",))
    assert set(evaluation.by_estimator["ml"].results["machine"]) == {"fan"}


def test_the_twfr_gmm_preset_pools_each_machine_with_its_own_decay(events):
    from asd.detect.frames import logmel_pooled
    from asd.detect.pooling import TWFR_DECAYS, parse_pooling
    from asd.presets import preset

    pooled = logmel_pooled(events, ["twfr"])["twfr"]
    i = int(np.flatnonzero(events.index["machine"] == "valve")[0])
    expected = parse_pooling(f"gwrp{TWFR_DECAYS['valve']}")(events.clip(i))
    np.testing.assert_allclose(pooled[i], expected, rtol=1e-5)
    ev = evaluate_detector(None, events, preset("twfr-gmm"), companions=False)
    assert ev.description == "logmel/twfr/gmm" and set(ev.by_estimator) == {"ml", "elliptic", "gmm"}
