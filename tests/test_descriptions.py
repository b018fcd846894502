"""The descriptions MLflow's UI shows: the sweep's parent run, the model and its versions."""

import pandas as pd

from asd.config import Config
from asd.sweep.descriptions import model_note, sweep_note, version_note
from asd.sweep.rows import OBJECTIVE
from asd.sweep.space import SearchSpace
from asd.sweep.summary import SweepResult


def _result(**overrides) -> SweepResult:
    summary = pd.DataFrame(
        [
            {"trial_id": "aa11", "status": "finished", "epochs": 2, "family": "encoder",
             "scorer": "ml", OBJECTIVE: 0.6627, "reference.hmean": 0.6011,
             "vs_reference.hmean": 0.0616, "param.train.lr": 0.0023},
            {"trial_id": "bb22", "status": "stopped_early", "epochs": 1, "family": "encoder",
             "scorer": "ml", OBJECTIVE: 0.6126, "reference.hmean": float("nan"),
             "vs_reference.hmean": float("nan"), "param.train.lr": 0.0008},
        ]
    )  # fmt: skip
    fields = {
        "name": "smoke-1",
        "parent_run_id": "p1",
        "summary": summary,
        "best_trial_id": "aa11",
        "best_run_id": "r1",
        "tune_scores": {"ml.hmean": 0.6627, "reference.ml.hmean": 0.6011, "knn.hmean": 0.7},
        "holdout_scores": {"ml.hmean": 0.5512, "reference.ml.hmean": 0.5843},
        "detector": "**encoder** detector (pooling `avg`, scorer `ml`)",
        "model_version": "3",
        "promotion": "no champion yet: v3 holdout.hmean 0.5512 becomes champion",
    }
    return SweepResult(**{**fields, **overrides})


def _space() -> SearchSpace:
    return SearchSpace(name="smoke", base=Config(), params=(), description="A tiny sweep.")


def test_parent_note_shows_the_champion_beside_the_reference():
    note = sweep_note(_result(), _space(), "asd sweep --space search_spaces/smoke.yaml")
    assert "## Champion" in note and "Trial `aa11` (run `r1`)" in note
    first = note.splitlines()[0]  # the UI folds the rest of a description
    assert "trial `aa11`" in first and "tuned 66.27 % vs untrained reference 60.11 %" in first
    assert "held-out 55.12 % vs untrained reference 58.43 % (-3.31 points)" in first
    assert "**encoder** detector (pooling `avg`, scorer `ml`)" in note
    ml = next(line for line in note.splitlines() if line.startswith("| ml (tuned with)"))
    # tuned: 66.27 vs 60.11 (+6.16); held-out: 55.12 vs 58.43 (-3.31)
    for figure in ("66.27 %", "60.11 %", "+6.16", "55.12 %", "58.43 %", "-3.31"):
        assert figure in ml, figure
    assert "held-out: untrained reference" in note
    assert "Registered as version 3." in note and "becomes champion" in note


def test_parent_note_ranks_the_trials_and_says_how_to_reproduce():
    note = sweep_note(_result(), _space(), "asd sweep --space search_spaces/smoke.yaml")
    rows = [line for line in note.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert rows[0].startswith("| 1 | `aa11` | finished") and "0.0023" in rows[0]
    assert rows[1].startswith("| 2 | `bb22` | stopped_early") and "n/a" in rows[1]
    assert "```\nasd sweep --space search_spaces/smoke.yaml\n```" in note
    assert "provenance/" in note and "A tiny sweep." in note


def test_parent_note_without_a_winner_says_so():
    note = sweep_note(_result(best_trial_id=None, summary=pd.DataFrame()), _space(), None)
    assert "no trial finished" in note.splitlines()[0] and "No trial finished" in note
    assert "asd sweep --space <space file>" in note


def test_version_and_model_notes_say_what_the_detector_scored():
    note = version_note(_result(), "holdout.hmean")
    assert note.startswith("**encoder** detector (pooling `avg`, scorer `ml`), from trial `aa11`")
    assert "held-out machine types: hmean 55.12 % vs untrained reference 58.43 % (-3.31" in note
    assert "tuned machine types: hmean 66.27 % vs untrained reference 60.11 %" in note
    model = model_note("asd-encoder", "3", "2", note)
    assert "Champion (alias `champion`): version 2" in model
    assert "models:/asd-encoder@champion" in model and "Latest version 3: **encoder**" in model
    assert "none yet" in model_note("asd-encoder", "1", None, note)
