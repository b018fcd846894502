"""asd.detect.validation: the per-epoch estimate ranks detectors as the full evaluation does."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from asd.config import Config, EncoderConfig, FeatureConfig
from asd.detect.detector import evaluate_detector
from asd.detect.validation import epoch_estimate, estimate_config, estimate_scorer
from asd.features import FeatureSet
from asd.model.encoder import Encoder

N_MELS = 16


def _feature_set(seed=0):
    """Three machines whose anomalies differ in strength and place (some bands, some frames)."""
    rng = np.random.default_rng(seed)
    rows, mels = [], []
    for machine, shift in (("fan", 0.6), ("valve", 1.2), ("slider", 0.3)):
        specs = [("train", "normal", "source" if i < 24 else "target") for i in range(28)]
        specs += [
            ("test", label, dom)
            for dom in ("source", "target")
            for label in ("normal", "anomaly")
            for _ in range(8)
        ]
        for split, label, domain in specs:
            mel = rng.normal(size=(N_MELS, 24))
            mel[: N_MELS // 2] += 0.5 * (domain == "target")
            if label == "anomaly":
                mel[N_MELS // 2 :, rng.integers(0, 12) :] += shift * rng.uniform(0.5, 1.5)
            mels.append(mel.astype(np.float32))
            rows.append((f"{machine}_{len(rows)}.wav", machine, 0, domain, split, label))
    index = pd.DataFrame(rows, columns=["clip", "machine", "section", "domain", "split", "label"])
    index["subset"] = "dev_data"
    return FeatureSet.from_arrays(mels, index, FeatureConfig(n_mels=N_MELS))


@pytest.fixture(scope="module")
def features():
    return _feature_set()


def _encoder(seed):
    torch.manual_seed(seed)
    return Encoder(EncoderConfig(width=8), N_MELS).eval()


CONFIGS = [
    {"scoring.family": family, "scoring.estimator": scorer, "scoring.reference": ref}
    for family in ("encoder", "fusion", "reference")
    for scorer in ("ml", "knn", "elliptic")
    for ref in (("mean", "mean_std") if family != "encoder" else ("mean",))
]


def _full(encoder, features, cfg):
    evaluation = evaluate_detector(encoder, features, cfg, estimators=(cfg.scoring.estimator,))
    return evaluation.by_estimator[cfg.scoring.estimator].summary["hmean"]


@pytest.fixture(scope="module")
def figures(features):
    """(config, estimate, full hmean) for each config with two untrained encoders."""
    out = []
    for seed in (0, 1):
        encoder = _encoder(seed)
        for overrides in CONFIGS:
            cfg = Config().with_overrides(overrides)
            estimate, _ = epoch_estimate(encoder, features, cfg, device="cpu")
            out.append((overrides, estimate, _full(encoder, features, cfg)))
    return out


def test_the_estimate_fits_one_scorer_with_few_refits():
    cfg = Config().with_overrides({"scoring.estimator": "elliptic"})
    assert estimate_config(cfg)[0].scoring.threshold_folds == 0
    assert estimate_scorer(cfg) == "ml"  # the robust fit's stand-in
    assert estimate_scorer(Config().with_overrides({"scoring.estimator": "knn"})) == "knn"
    fusion = Config().with_overrides({"scoring.family": "fusion"})
    # the untrained member keeps the final folds (scored once); the encoder's refit twice
    assert estimate_config(fusion) == (fusion, 2)
    in_sample = fusion.with_overrides({"scoring.threshold_folds": 0})
    assert estimate_config(in_sample) == (in_sample, 0)


def test_thresholds_do_not_move_the_figure_of_a_detector_without_fusion(figures):
    """AUC and pAUC rank scores: in-sample thresholds give the full figure exactly."""
    exact = [
        (o, est, full)
        for o, est, full in figures
        if o["scoring.family"] != "fusion" and o["scoring.estimator"] != "elliptic"
    ]
    assert len(exact) == 12
    for overrides, estimate, full in exact:
        assert estimate == pytest.approx(full, abs=1e-12), overrides


def test_the_estimate_ranks_configurations_as_the_full_evaluation(figures):
    estimates = np.array([est for _, est, _ in figures])
    fulls = np.array([full for _, _, full in figures])
    assert fulls.std() > 0.02, "the configurations must differ for a ranking to mean anything"
    rho = spearmanr(estimates, fulls).statistic
    assert rho > 0.9, (rho, figures)
    assert np.argmax(fulls) in np.flatnonzero(estimates >= estimates.max() - 0.02)


def test_fusion_picks_the_same_reference_statistic(figures):
    """Fusion with the mean or the mean_std reference: the estimate orders them as the full
    evaluation (in-sample standardisation had them the wrong way round here)."""
    fusion = {}
    for i, (o, est, full) in enumerate(figures):
        if o["scoring.family"] == "fusion":
            fusion.setdefault((i // len(CONFIGS), o["scoring.estimator"]), {})[
                o["scoring.reference"]
            ] = (est, full)
    assert len(fusion) == 6
    for key, pair in fusion.items():
        (est_mean, full_mean), (est_std, full_std) = pair["mean"], pair["mean_std"]
        assert (est_mean < est_std) == (full_mean < full_std), (key, pair)


def test_untrained_members_are_scored_once_and_reused_from_the_cache(features):
    cfg = Config().with_overrides({"scoring.family": "fusion", "scoring.estimator": "elliptic"})
    cache = {}
    encoder = _encoder(0)
    first, _ = epoch_estimate(encoder, features, cfg, "cpu", cache)
    assert len(cache) == 1 and next(iter(cache)).startswith("logmel/mean/ml")
    assert first == epoch_estimate(encoder, features, cfg, "cpu")[0]
    assert epoch_estimate(encoder, features, cfg, "cpu", cache)[0] == first and len(cache) == 1


def test_validate_runs_the_full_evaluation_only_when_due(features):
    from asd.detect.validation import validate

    cfg = Config().with_overrides({"scoring.threshold_folds": 0})
    encoder = _encoder(0)
    cheap = validate(encoder, features, cfg, full=False, device="cpu")
    assert cheap.evaluation is None and cheap.evaluation_s == 0.0 and cheap.estimate_s > 0.0
    full = validate(encoder, features, cfg, full=True, device="cpu")
    assert full.evaluation is not None and full.evaluation_s > 0.0
    assert full.estimate == pytest.approx(cheap.estimate), "the estimate does not depend on it"
    assert {"ml", "elliptic"} <= set(full.evaluation.by_estimator)
    assert "reference" in full.evaluation.companions
