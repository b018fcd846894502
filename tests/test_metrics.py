import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from asd.detect.metrics import harmonic_mean, machine_table, official_score, section_scores
from asd.errors import AsdError


def results(rows, machine="fan", section=0):
    """rows: (domain, label, score) tuples."""
    return pd.DataFrame(
        [(machine, section, d, lab, s) for d, lab, s in rows],
        columns=["machine", "section", "domain", "label", "anomaly_score"],
    )


def one_row(df):
    table = section_scores(df)
    assert len(table) == 1
    return table.iloc[0]


# --------------------------------------------------------------- hand-computed cases
def test_perfect_separation_gives_one():
    df = results(
        [
            ("source", "normal", 0.1),
            ("source", "normal", 0.2),
            ("target", "normal", 0.3),
            ("target", "normal", 0.4),
            ("source", "anomaly", 0.8),
            ("target", "anomaly", 0.9),
        ]
    )
    row = one_row(df)
    assert row.auc_source == row.auc_target == row.pauc == 1.0
    assert row.n_clips == 6
    assert official_score(df)["hmean"] == pytest.approx(1.0)


def test_reversed_scores_give_zero_auc_and_mcclish_floor():
    df = results(
        [
            ("source", "normal", 0.9),
            ("target", "normal", 0.8),
            ("source", "anomaly", 0.1),
            ("target", "anomaly", 0.2),
        ]
    )
    row = one_row(df)
    assert row.auc_source == 0.0 and row.auc_target == 0.0
    # raw partial area 0; McClish: 0.5 * (1 + (0 - p^2/2) / (p - p^2/2)) with p = 0.1
    assert row.pauc == pytest.approx(0.5 * (1 - 0.005 / 0.095))
    assert official_score(df)["hmean"] < 1e-9  # clipped at eps, no division by zero


def test_source_and_target_differ():
    # source normals {.1,.2}, target normals {.6,.7}, anomalies {.5 (source), .9 (target)}
    df = results(
        [
            ("source", "normal", 0.1),
            ("source", "normal", 0.2),
            ("target", "normal", 0.6),
            ("target", "normal", 0.7),
            ("source", "anomaly", 0.5),
            ("target", "anomaly", 0.9),
        ]
    )
    row = one_row(df)
    assert row.auc_source == 1.0
    assert row.auc_target == pytest.approx(2 / 4)  # only .9 beats both target normals


def test_target_anomaly_counts_in_auc_source():
    # a target-domain anomaly scored 0.15 sits between the source normals: 3 of 4 pairs right
    df = results(
        [
            ("source", "normal", 0.1),
            ("source", "normal", 0.2),
            ("target", "normal", 0.05),
            ("source", "anomaly", 0.5),
            ("target", "anomaly", 0.15),
        ]
    )
    assert one_row(df).auc_source == pytest.approx(3 / 4)  # source anomalies alone: 1.0


def test_pauc_hand_value_and_sklearn_max_fpr():
    # 10 normals scored 0..9, anomalies 9.5 and 8.5: ROC (0,0)->(0,.5)->(.1,.5)->(.1,1)
    # raw area on FPR [0, .1] = .05; McClish 0.5 * (1 + (.05 - .005) / (.1 - .005)) = 14/19
    rows = [("source" if i < 5 else "target", "normal", float(i)) for i in range(10)]
    rows += [("source", "anomaly", 9.5), ("target", "anomaly", 8.5)]
    df = results(rows)
    y = (df["label"] == "anomaly").astype(int)
    assert one_row(df).pauc == pytest.approx(14 / 19)
    assert one_row(df).pauc == pytest.approx(roc_auc_score(y, df["anomaly_score"], max_fpr=0.1))


def test_pauc_on_random_scores_matches_sklearn():
    rng = np.random.default_rng(0)
    n = 200
    df = results(
        [
            (rng.choice(["source", "target"]), lab, s)
            for lab, s in zip(rng.choice(["normal", "anomaly"], n), rng.normal(size=n), strict=True)
        ]
    )
    y = (df["label"] == "anomaly").astype(int)
    assert one_row(df).pauc == pytest.approx(roc_auc_score(y, df["anomaly_score"], max_fpr=0.1))


def test_numeric_labels_equal_string_labels():
    df = results(
        [
            ("source", "normal", 0.1),
            ("target", "normal", 0.6),
            ("source", "anomaly", 0.5),
            ("target", "anomaly", 0.9),
            ("source", "normal", 0.55),
        ]
    )
    numeric = df.assign(label=(df["label"] == "anomaly").astype(int))
    pd.testing.assert_frame_equal(section_scores(df), section_scores(numeric))


# ----------------------------------------------------------------- harmonic mean
def test_harmonic_mean_hand_value():
    assert harmonic_mean([1.0, 0.5, 0.75]) == pytest.approx(3 / (1 + 2 + 4 / 3))  # 9/13
    assert harmonic_mean([0.0, 1.0]) == pytest.approx(2 / (1 / np.finfo(float).eps + 1))
    with pytest.raises(AsdError):
        harmonic_mean([])


def test_official_score_is_hmean_over_all_sections_and_metrics():
    a = results(  # auc_source 1, auc_target .5, pauc from sklearn
        [
            ("source", "normal", 0.1),
            ("source", "normal", 0.2),
            ("target", "normal", 0.6),
            ("target", "normal", 0.7),
            ("source", "anomaly", 0.5),
            ("target", "anomaly", 0.9),
        ],
        machine="fan",
    )
    b = results(
        [
            ("source", "normal", 0.1),
            ("target", "normal", 0.2),
            ("source", "anomaly", 0.8),
            ("target", "anomaly", 0.15),
        ],
        machine="valve",
    )
    df = pd.concat([a, b], ignore_index=True)
    table = section_scores(df)
    values = table[["auc_source", "auc_target", "pauc"]].to_numpy().ravel()
    assert len(values) == 6
    out = official_score(df)
    assert out["hmean"] == pytest.approx(len(values) / np.sum(1 / values))
    assert out["auc_target"] == pytest.approx(2 / (1 / 0.5 + 1 / table.auc_target[1]))
    assert out["n_sections"] == 2

    per_machine = machine_table(df)
    assert list(per_machine.columns) == ["machine", "auc_source", "auc_target", "pauc", "hmean"]
    assert list(per_machine.machine) == ["fan", "valve"]
    fan = table.iloc[0][["auc_source", "auc_target", "pauc"]].to_numpy(float)
    assert per_machine.hmean[0] == pytest.approx(3 / np.sum(1 / fan))


# ------------------------------------------------------------------------ errors
def test_section_without_anomalies_names_it():
    df = results([("source", "normal", 0.1), ("target", "normal", 0.2)], machine="gearbox")
    with pytest.raises(AsdError, match="gearbox section 00.*no anomalous"):
        section_scores(df)


def test_section_without_target_normals_names_it():
    df = results([("source", "normal", 0.1), ("target", "anomaly", 0.2)], section=3)
    with pytest.raises(AsdError, match="fan section 03.*target"):
        section_scores(df)


def test_bad_inputs_raise():
    df = results([("source", "normal", np.nan), ("target", "normal", 0.2)])
    with pytest.raises(AsdError, match="NaN"):
        section_scores(df)
    with pytest.raises(AsdError, match="labels"):
        section_scores(df.assign(anomaly_score=1.0, label="unknown"))
    with pytest.raises(AsdError, match="column"):
        section_scores(df.drop(columns="domain"))
