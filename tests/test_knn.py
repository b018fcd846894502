"""The cosine kNN scorer against a brute-force numpy oracle, plus its contract."""

import numpy as np
import pandas as pd
import pytest

from asd.config import ScoringConfig
from asd.detect.knn import KnnScorer, knn_distance
from asd.errors import AsdError


def _meta(machines, domains):
    return pd.DataFrame({"machine": machines, "section": 0, "domain": domains})


def brute_force(query, train, k):
    """Mean of the k smallest cosine distances, one pair at a time."""
    dists = []
    for row in train:
        cos = float(np.dot(query, row) / (np.linalg.norm(query) * np.linalg.norm(row)))
        dists.append(1.0 - cos)
    dists.sort()
    return float(np.mean(dists[: min(k, len(dists))]))


@pytest.mark.parametrize("k", [1, 3, 12])
def test_scores_match_the_brute_force_oracle_nearer_domain(k):
    rng = np.random.default_rng(0)
    src, tgt = rng.normal(size=(40, 6)), rng.normal(loc=2.0, size=(10, 6))
    x = np.concatenate([src, tgt])
    meta = _meta(["fan"] * 50, ["source"] * 40 + ["target"] * 10)
    scorer = KnnScorer(k=k).fit(x, meta)
    test = rng.normal(loc=1.0, size=(15, 6))
    expected = [min(brute_force(q, src, k), brute_force(q, tgt, k)) for q in test]
    np.testing.assert_allclose(scorer.score_samples(test, _meta(["fan"] * 15, "source")), expected)


def test_sections_are_scored_against_their_own_clips():
    rng = np.random.default_rng(1)
    fan, valve = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    x = np.concatenate([fan, valve])
    scorer = KnnScorer(k=2).fit(x, _meta(["fan"] * 20 + ["valve"] * 20, "source"))
    q = rng.normal(size=(3, 4))
    got = scorer.score_samples(q, _meta(["valve"] * 3, "source"))
    np.testing.assert_allclose(got, [brute_force(v, valve, 2) for v in q])


def test_distance_is_scale_invariant_and_anomalies_score_higher():
    rng = np.random.default_rng(2)
    bank = rng.normal(size=(30, 5))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = bank[:4] * 7.0
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert np.allclose(knn_distance(q, bank, 1), 0.0, atol=1e-12)
    x = np.concatenate([rng.normal(loc=[3, 0, 0, 0, 0], size=(60, 5))])
    scorer = KnnScorer(k=3).fit(x, _meta(["fan"] * 60, "source"))
    normal = rng.normal(loc=[3, 0, 0, 0, 0], size=(30, 5))
    anomaly = rng.normal(loc=[0, 3, 0, 0, 0], size=(30, 5))
    m = _meta(["fan"] * 30, "source")
    assert scorer.score_samples(anomaly, m).mean() > scorer.score_samples(normal, m).mean()


def test_only_normal_train_rows_are_kept_and_config_is_read():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3))
    meta = _meta(["fan"] * 12, "source").assign(
        label=["normal"] * 10 + ["anomaly"] * 2, split="train"
    )
    scorer = KnnScorer.from_config(ScoringConfig(knn_k=4, threshold_folds=0)).fit(x, meta)
    assert scorer.k == 4 and len(scorer.banks_[("fan", 0)]["source"]) == 10
    assert set(scorer.decide(scorer.score_samples(x, meta), meta)) <= {0, 1}


def test_clear_errors():
    x = np.ones((4, 3))
    meta = _meta(["fan"] * 4, "source")
    with pytest.raises(AsdError, match="not fitted"):
        KnnScorer().score_samples(x, meta)
    with pytest.raises(AsdError, match="all zeros"):
        KnnScorer().fit(np.zeros((4, 3)), meta)
    scorer = KnnScorer().fit(x + np.arange(4)[:, None], meta)
    with pytest.raises(AsdError, match="not seen"):
        scorer.score_samples(x, _meta(["valve"] * 4, "source"))
    with pytest.raises(AsdError, match="knn_k"):
        KnnScorer(k=0).fit(x, meta)
