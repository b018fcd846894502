"""Fitted scorers as arrays and JSON (asd/detect/state.py): restored, they score alike."""

import json

import numpy as np
import pandas as pd
import pytest

from asd.detect.gmm import GmmScorer
from asd.detect.knn import KnnScorer
from asd.detect.mahalanobis import MahalanobisScorer
from asd.detect.state import export_state, merge, read_state, restore, write_state
from asd.errors import AsdError


def _data(machines=("fan", "valve"), seed=0, d=4):
    """Normal train clips of two domains per machine, and test clips (some shifted)."""
    rng = np.random.default_rng(seed)
    rows, x = [], []
    for machine in machines:
        for split, n in (("train", 24), ("test", 8)):
            for i in range(n):
                domain = "source" if i % 4 else "target"
                label = "anomaly" if split == "test" and i % 2 else "normal"
                shift = 3.0 if label == "anomaly" else (1.0 if domain == "target" else 0.0)
                x.append(rng.normal(size=d) + shift)
                rows.append((machine, 0, domain, split, label))
    meta = pd.DataFrame(rows, columns=["machine", "section", "domain", "split", "label"])
    return np.array(x), meta


SCORERS = [
    MahalanobisScorer(estimator="ml", threshold_folds=3),
    MahalanobisScorer(estimator="elliptic", domain_strategy="pooled"),
    KnnScorer(k=3, threshold_folds=3),
    GmmScorer(n_components=2, covariance_type="diag", threshold_folds=3),
]


@pytest.mark.parametrize(
    "scorer", SCORERS, ids=lambda s: type(s).__name__ + getattr(s, "estimator", "")
)
def test_a_restored_scorer_scores_and_thresholds_like_the_fitted_one(scorer, tmp_path):
    x, meta = _data()
    fitted = scorer.fit(x, meta)
    write_state(export_state(fitted), tmp_path, "member")
    restored = restore(read_state(tmp_path, "member"))
    assert type(restored) is type(fitted) and restored.get_params() == fitted.get_params()
    np.testing.assert_array_equal(restored.score_samples(x, meta), fitted.score_samples(x, meta))
    assert restored.thresholds_ == fitted.thresholds_
    for key, scores in fitted.train_scores_.items():
        np.testing.assert_array_equal(restored.train_scores_[key], scores)
    assert restored.fallbacks_ == fitted.fallbacks_


def test_the_files_hold_no_pickle_and_name_every_section(tmp_path):
    x, meta = _data()
    paths = write_state(export_state(MahalanobisScorer().fit(x, meta)), tmp_path, "s")
    assert [p.name for p in paths] == ["s.json", "s.npz"]
    saved = json.loads(paths[0].read_text())
    assert saved["kind"] == "mahalanobis" and saved["n_features"] == 4
    assert [(s["machine"], s["section"]) for s in saved["sections"]] == [("fan", 0), ("valve", 0)]
    with np.load(paths[1], allow_pickle=False) as npz:
        assert all(npz[name].dtype == np.float64 for name in npz.files)


def test_merge_adds_new_machines_and_refuses_shared_ones_or_other_settings():
    x, meta = _data(("fan",))
    y, meta_new = _data(("pump",), seed=1)
    old = export_state(MahalanobisScorer().fit(x, meta))
    new = export_state(MahalanobisScorer().fit(y, meta_new))
    merged = restore(merge(old, new))
    both = pd.concat([meta, meta_new], ignore_index=True)
    scores = merged.score_samples(np.vstack([x, y]), both)
    np.testing.assert_allclose(
        scores[: len(x)], MahalanobisScorer().fit(x, meta).score_samples(x, meta)
    )
    with pytest.raises(AsdError, match="already has machine/section fan/00"):
        merge(old, old)
    other = export_state(MahalanobisScorer(estimator="elliptic").fit(y, meta_new))
    with pytest.raises(AsdError, match="of other settings"):
        merge(old, other)


def test_broken_or_pickled_state_is_refused_in_one_line(tmp_path):
    x, meta = _data()
    write_state(export_state(KnnScorer().fit(x, meta)), tmp_path, "s")
    with open(tmp_path / "s.npz", "wb") as fh:
        np.savez(fh, **{"0.bank.0": np.array([object()], dtype=object)})
    with pytest.raises(AsdError, match="cannot read scorer state .*s.json"):
        read_state(tmp_path, "s")
    with pytest.raises(AsdError, match="cannot read scorer state"):
        read_state(tmp_path, "missing")
    state = export_state(KnnScorer().fit(x, meta))
    state.kind = "forest"
    with pytest.raises(AsdError, match="unknown scorer kind 'forest'"):
        restore(state)
