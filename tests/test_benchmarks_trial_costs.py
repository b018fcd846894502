"""benchmarks/trial_costs.py without running its sweeps: spaces, per-trial table, projection."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import trial_costs  # noqa: E402


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_the_benchmark_spaces_are_valid_and_search_what_the_issue_names(size, tmp_path):
    from asd.sweep.space import load_space

    quick, paper = trial_costs.cases(size)
    space = load_space(trial_costs.write_space(quick, tmp_path / "quick.yaml"))
    assert {p.key for p in space.params} == {
        "scoring.family",
        "scoring.reference",
        "loss.temperature",
    }
    assert space.sweep["num_samples"] == quick.trials
    assert load_space(trial_costs.write_space(paper, tmp_path / "paper.yaml")).base.encoder
    if size == "small":
        assert quick.trials == 6 and space.base.train.epochs == 15  # the quick preset
        assert len(quick.holdout) == 2


def test_the_per_trial_table_projects_training_and_validation_to_a_gpu_node():
    times = dict.fromkeys(trial_costs.TIMES, 0.0)
    trial = {**times, "trial": "t1", "family": "fusion", "status": "finished", "epochs": 4,
             "train_s": 40.0, "validate_s": 6.0, "final_s": 2.0, "setup_s": 1.0,
             "samples_per_epoch": 11_669.0 / 2, "estimate": 0.6, "full": 0.62}  # fmt: skip
    fig = trial_costs.SweepFigures("quick", wall_s=60.0, tune_s=50.0, trials=[trial])
    table, summary = trial_costs.per_trial_rows(fig, cores=2)
    cells = [c.strip() for c in table[-1].strip("|").split("|")]
    # overhead = Tune phase - in-trial seconds; GPU: 4 x half a second; 8 s x 2 / 16 cores
    assert cells[-3:] == ["1.00", "2.00", "1.00"]
    assert "validation + evaluation = 20 % of training here" in summary[1]
    assert "validation + evaluation 1.0 s (50 % of training)" in summary[2]


def test_rank_correlation_needs_three_finished_trials():
    def fig(pairs):
        trials = [{"estimate": e, "full": f} for e, f in pairs]
        return trial_costs.SweepFigures("x", 1.0, 1.0, trials)

    assert "too few" in trial_costs.rank_correlation([fig([(0.5, 0.6), (0.7, None)])])
    line = trial_costs.rank_correlation([fig([(0.5, 0.6), (0.7, 0.8), (0.6, 0.65)])])
    assert "1.000 over 3 finished trials" in line


def test_the_report_goes_into_latest_md_and_run_py_keeps_it(tmp_path):
    from benchmarks import harness
    from benchmarks import run as bench_run

    first = harness.splice_trial_costs("# table\n", "## Trial costs (small) A\n")
    again = harness.splice_trial_costs(first, "## Trial costs (small) B\n")
    assert again.count(harness.BLOCK_BEGIN) == 1 and "costs (small) B" in again
    assert "costs (small) A" not in again and again.startswith("# table")
    out = tmp_path / "latest"
    out.with_suffix(".md").write_text(again)
    info = {"date": "d", "cpu": "c", "cores": 2, "torch_threads": 2, "torch": "t", "device": "cpu"}
    text = bench_run.write(out, info, [], [])
    assert harness.trial_costs_block(text) == harness.trial_costs_block(again)
    assert harness.trial_costs_block(out.with_suffix(".md").read_text()) is not None
