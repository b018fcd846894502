"""Smoke test of benchmarks/thresholds.py at a toy size: the table has a row per pair."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import thresholds  # noqa: E402


def test_the_table_has_every_reference_and_scorer(tmp_path, capsys):
    argv = ["--workdir", str(tmp_path), "--machines", "fan", "valve", "--train-source", "20"]
    assert thresholds.main([*argv, "--seconds", "1.0", "--test-per-domain", "4"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mean")]
    assert [line.split("|")[1:3] for line in lines] == [
        [f" {stat} ", f" {scorer} "]
        for stat in ("mean", "mean_std")
        for scorer in ("ml", "elliptic", "knn", "gmm")
    ]
    for line in lines:
        cells = [float(c) for c in line.split("|")[3:8]]
        assert all(0.0 <= c <= 100.0 for c in cells)
