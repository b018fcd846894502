"""The contract every per-section scorer keeps, checked on each of them, and its helpers."""

import numpy as np
import pandas as pd
import pytest

from asd.detect.gmm import GmmScorer
from asd.detect.knn import KnnScorer
from asd.detect.mahalanobis import MahalanobisScorer
from asd.detect.scorer import (
    check_embeddings,
    domain_centres,
    group_rows,
    known,
    normal_train_rows,
    section_keys,
)
from asd.errors import AsdError

SCORERS = {
    "ml": lambda **kw: MahalanobisScorer("ml", **kw),
    "elliptic": lambda **kw: MahalanobisScorer("elliptic", **kw),
    "knn": lambda **kw: KnnScorer(k=3, **kw),
    "gmm": lambda **kw: GmmScorer(n_components=1, **kw),
}


@pytest.fixture(scope="module")
def index():
    """Two sections of 4-d embeddings: normal train clips of both domains, then test clips."""
    rng = np.random.default_rng(0)
    rows, x = [], []
    axes = np.eye(4) * 6.0
    # normals around one axis, anomalies around another: apart in distance and in angle (kNN)
    for machine, normal, anomaly in (("fan", axes[0], axes[1]), ("valve", axes[2], axes[3])):
        for domain, n in (("source", 30), ("target", 8)):
            x.append(rng.normal(normal, 1.0, (n, 4)))
            rows += [(machine, 0, domain, "train", "normal")] * n
        for label, mean in (("normal", normal), ("anomaly", anomaly)):
            x.append(rng.normal(mean, 1.0, (10, 4)))
            rows += [(machine, 0, "source", "test", label)] * 10
    meta = pd.DataFrame(rows, columns=["machine", "section", "domain", "split", "label"])
    return np.concatenate(x), meta


@pytest.mark.parametrize("name", SCORERS)
def test_fit_sees_only_normal_train_rows_and_returns_itself(index, name):
    x, meta = index
    scorer = SCORERS[name]()
    assert scorer.fit(x, meta) is scorer
    train = normal_train_rows(meta)
    alone = SCORERS[name]().fit(x[train], meta[train].drop(columns=["split", "label"]))
    np.testing.assert_allclose(scorer.score_samples(x, meta), alone.score_samples(x, meta))
    assert scorer.thresholds_ == pytest.approx(alone.thresholds_)
    assert scorer.n_features_in_ == 4 and sorted(scorer.sections()) == [("fan", 0), ("valve", 0)]


@pytest.mark.parametrize("name", SCORERS)
def test_thresholds_are_the_quantile_of_train_scores_and_decisions_exceed_them(index, name):
    x, meta = index
    scorer = SCORERS[name](threshold_quantile=0.8).fit(x, meta)
    train = normal_train_rows(meta)
    for key, rows in group_rows(section_keys(meta, need_domain=False)).items():
        fitted = rows[train[rows]]
        in_sample = scorer.score_samples(x[fitted], meta.iloc[fitted])
        np.testing.assert_allclose(scorer.train_scores_[key], in_sample)
        assert scorer.thresholds_[key] == pytest.approx(np.quantile(in_sample, 0.8))
    scores = scorer.score_samples(x, meta)
    keys = section_keys(meta, need_domain=False)
    expected = [int(s > scorer.thresholds_[k]) for s, k in zip(scores, keys, strict=True)]
    assert scorer.predict(x, meta).tolist() == expected
    for machine in ("fan", "valve"):  # DCASE's sign: higher is more anomalous
        part = (meta["machine"] == machine).to_numpy()
        anomalous = part & (meta["label"] == "anomaly").to_numpy()
        assert scores[anomalous].min() > np.median(scores[part & ~anomalous])


@pytest.mark.parametrize("name", SCORERS)
def test_the_contracts_errors_name_what_to_fix(index, name):
    x, meta = index
    with pytest.raises(AsdError, match="is not fitted"):
        SCORERS[name]().score_samples(x, meta)
    with pytest.raises(AsdError, match="threshold_quantile must be in"):
        SCORERS[name](threshold_quantile=1.0).fit(x, meta)
    with pytest.raises(AsdError, match="threshold_folds must be 0 or at least 2"):
        SCORERS[name](threshold_folds=1).fit(x, meta)
    scorer = SCORERS[name]().fit(x, meta)
    pump = meta.assign(machine="pump")
    with pytest.raises(AsdError, match=r"pump section 00 was not seen .*known: fan/00, valve/00"):
        scorer.score_samples(x, pump)
    with pytest.raises(AsdError, match="was not seen"):
        scorer.decide(np.zeros(len(x)), pump)
    with pytest.raises(AsdError, match="3 dimensions, the scorer was fitted on 4"):
        scorer.score_samples(x[:, :3], meta)
    with pytest.raises(AsdError, match=r"scores have shape \(2,\)"):
        scorer.decide(np.zeros(2), meta)
    only_test = meta.assign(split="test")
    with pytest.raises(AsdError, match=r"fan section 00: 0 normal train clip\(s\)"):
        SCORERS[name]().fit(x, only_test)


def test_embeddings_are_checked_against_their_meta():
    meta = pd.DataFrame({"machine": ["fan"] * 3, "section": [0] * 3})
    assert check_embeddings(np.ones((3, 2), np.float32), meta, "fit").dtype == np.float64
    with pytest.raises(AsdError, match=r"fit: embeddings must be a non-empty \(N, d\)"):
        check_embeddings(np.ones(3), meta, "fit")
    with pytest.raises(AsdError, match="score: 2 embeddings but 3 meta rows"):
        check_embeddings(np.ones((2, 2)), meta, "score")
    bad = np.ones((3, 2))
    bad[1, 0], bad[2, 1] = np.nan, np.inf
    with pytest.raises(AsdError, match=r"2 embedding\(s\) contain NaN or inf"):
        check_embeddings(bad, meta, "fit")


def test_domain_centres_subtract_each_rows_own_domain_or_nothing_when_pooled():
    x = np.array([[0.0, 0.0], [2.0, 2.0], [10.0, 0.0], [12.0, 4.0]])
    domains = np.array(["source", "source", "target", "target"])
    centres, centred = domain_centres(x, domains, "min", np.mean)
    np.testing.assert_allclose(centres["source"], [1.0, 1.0])
    np.testing.assert_allclose(centres["target"], [11.0, 2.0])
    np.testing.assert_allclose(centred, [[-1, -1], [1, 1], [-1, -2], [1, 2]])
    pooled, same = domain_centres(x, domains, "pooled", np.mean)
    assert list(pooled) == ["pooled"] and same is x
    np.testing.assert_allclose(pooled["pooled"], [0.0, 0.0])
    with pytest.raises(AsdError, match="domain_strategy must be one of"):
        domain_centres(x, domains, "nearest", np.mean)


def test_rows_keys_and_groups():
    meta = pd.DataFrame(
        {
            "machine": ["valve", "fan", "valve", "fan"],
            "section": ["1", 0, 1, 0],
            "label": ["normal", "normal", "anomaly", "normal"],
            "split": ["train", "test", "train", "train"],
        }
    )
    assert normal_train_rows(meta).tolist() == [True, False, False, True]
    assert normal_train_rows(meta[["machine"]]).tolist() == [True] * 4  # no columns: all rows
    keys = section_keys(meta, need_domain=False)
    assert keys == [("valve", 1), ("fan", 0), ("valve", 1), ("fan", 0)]
    groups = group_rows(keys)
    assert list(groups) == [("valve", 1), ("fan", 0)]  # first-seen order
    assert [g.tolist() for g in groups.values()] == [[0, 2], [1, 3]]
    with pytest.raises(AsdError, match=r"meta lacks column\(s\) domain"):
        section_keys(meta, need_domain=True)
    assert known([("valve", 1), ("fan", 0)]) == "fan/00, valve/01"
