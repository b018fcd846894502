"""Out-of-fold thresholds: the flag rate of new normal clips is near 1 - quantile."""

import numpy as np
import pandas as pd
import pytest

from asd.detect.knn import KnnScorer
from asd.detect.mahalanobis import MahalanobisScorer
from asd.detect.thresholds import fold_of, out_of_fold_scores
from asd.errors import AsdError

D = 24


def _draw(rng, n, shift=0.0):
    """(n, D) correlated Gaussian clips: the normal sound of one domain."""
    mix = np.eye(D) + 0.3 * np.tri(D, k=-1)
    return rng.normal(size=(n, D)) @ mix.T + shift


def _section(rng, n_source, n_target, machine="fan"):
    x = np.concatenate([_draw(rng, n_source), _draw(rng, n_target, 3.0)])
    meta = pd.DataFrame(
        {"machine": machine, "section": 0, "domain": ["source"] * n_source + ["target"] * n_target}
    )
    return x, meta


@pytest.mark.parametrize(
    "make", [lambda f: MahalanobisScorer("ml", threshold_folds=f), lambda f: KnnScorer(5, 0.9, f)]
)
def test_normal_test_clips_are_flagged_at_about_one_minus_quantile(make):
    rng = np.random.default_rng(0)
    x, meta = _section(rng, 290, 10)
    test, test_meta = _section(rng, 2900, 100)  # new normal clips, the same domain mix
    rates = {}
    for folds in (0, 5):
        scorer = make(folds).fit(x, meta)
        rates[folds] = scorer.decide(scorer.score_samples(test, test_meta), test_meta).mean()
    assert abs(rates[5] - 0.1) < 0.04, rates
    # In-sample thresholds sit too low (the model has seen its clips): many more flags.
    assert rates[0] > 0.15, rates


def test_train_scores_are_out_of_fold_and_thresholds_their_quantile():
    rng = np.random.default_rng(1)
    x, meta = _section(rng, 60, 10)
    scorer = MahalanobisScorer("ml", threshold_quantile=0.8, threshold_folds=4).fit(x, meta)
    train = scorer.train_scores_[("fan", 0)]
    assert train.shape == (70,)
    assert scorer.thresholds_[("fan", 0)] == pytest.approx(np.quantile(train, 0.8))
    in_sample = scorer.score_samples(x, meta)
    assert train.mean() > in_sample.mean()  # unseen clips are farther
    again = MahalanobisScorer("ml", threshold_quantile=0.8, threshold_folds=4).fit(x, meta)
    np.testing.assert_array_equal(again.train_scores_[("fan", 0)], train)  # seeded folds


def test_out_of_fold_scores_equal_manual_refits():
    rng = np.random.default_rng(2)
    x, meta = _section(rng, 30, 6)
    scorer = KnnScorer(k=2, threshold_folds=3)
    got = out_of_fold_scores(scorer, x, meta, 3)
    fold = fold_of(meta["domain"].to_numpy(), 3, seed=0)
    for f in range(3):
        held = fold == f
        ref = KnnScorer(k=2).fit(x[~held], meta[~held].reset_index(drop=True))
        np.testing.assert_allclose(got[held], ref.score_samples(x[held], meta[held]))


def test_folds_are_stratified_by_domain():
    domains = np.array(["source"] * 20 + ["target"] * 5)
    fold = fold_of(domains, 5, seed=3)
    for f in range(5):
        assert (domains[fold == f] == "target").sum() == 1
        assert (domains[fold == f] == "source").sum() == 4


def test_tiny_sections_fall_back_to_in_sample_and_bad_folds_fail(caplog):
    rng = np.random.default_rng(4)
    x, meta = _section(rng, 2, 0)
    scorer = KnnScorer(k=1, threshold_folds=5).fit(x, meta)
    assert "in-sample" in caplog.text
    assert scorer.train_scores_[("fan", 0)].shape == (2,)
    with pytest.raises(AsdError, match="threshold_folds"):
        MahalanobisScorer("ml", threshold_folds=1).fit(*_section(rng, 20, 0))
