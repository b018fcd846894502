"""Ground truth is data, not features: labels given now are the labels scored, every time.

A tiny tree with one eval machine type (unlabelled test names, labels in headerless CSVs) is
evaluated with the untrained reference (`asd evaluate --embedding mean-logmel`, no training)
in one work folder with and without ground truth, then with corrected (flipped) ground truth:
each run must score the labels it was given, as a fresh work folder would.
"""

import re
import shutil

import pytest

from asd.cli.main import main
from asd.data.index import index_dataset
from asd.errors import AsdError
from asd.features import extract_features

pytestmark = pytest.mark.usefixtures("cli_environment")  # it runs `asd` in-process

CSV = "ground_truth_Vacuum_section_00_test.csv"


@pytest.fixture(scope="module")
def tree(synth_tree):
    return synth_tree(machines=(), eval_machines=("Vacuum",), train_source=6, test_per_domain=3)


def _evaluate(capsys, root, work, truth=None):
    argv = ["evaluate", "--embedding", "mean-logmel", "--estimator", "ml", "--data", str(root)]
    argv += ["--workdir", str(work), "--quiet"]
    argv += ["--ground-truth", str(truth)] if truth else []
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _score(out):
    found = re.search(r"official score .*: ([0-9.]+) %", out)
    assert found, out
    return float(found[1])


def _flipped(tree, folder):
    """A copy of the tree's ground truth with every label flipped."""
    shutil.copytree(tree / "ground_truth", folder)
    csv = folder / CSV
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    csv.write_text("".join(f"{name},{1 - int(value)}\n" for name, value in rows))
    return folder


def test_ground_truth_given_after_a_run_without_it_is_used(tree, tmp_path, capsys):
    work = tmp_path / "work"
    assert "no labelled test clips" in _evaluate(capsys, tree, work)
    warm = _score(_evaluate(capsys, tree, work, tree / "ground_truth"))
    fresh = _score(_evaluate(capsys, tree, tmp_path / "fresh", tree / "ground_truth"))
    assert warm == fresh


def test_corrected_ground_truth_on_a_warm_cache_scores_the_new_labels(tree, tmp_path, capsys):
    work = tmp_path / "work"
    before = _score(_evaluate(capsys, tree, work, tree / "ground_truth"))
    flipped = _flipped(tree, tmp_path / "gt")
    warm = _score(_evaluate(capsys, tree, work, flipped))
    fresh = _score(_evaluate(capsys, tree, tmp_path / "fresh", flipped))
    assert warm == fresh
    assert warm != before


def test_a_cache_hit_carries_the_labels_of_the_index_it_was_asked_for(tree, tmp_path):
    from asd.config import FeatureConfig

    cfg = FeatureConfig(n_mels=16)
    first = extract_features(index_dataset(tree), cfg, tmp_path, progress=False)
    assert set(first.index.loc[first.index.split == "test", "label"]) == {"unknown"}
    index = index_dataset(tree, ground_truth=tree / "ground_truth")
    second = extract_features(index, cfg, tmp_path, progress=False)
    assert second.index["label"].tolist() == index["label"].tolist()
    assert second.index["domain"].tolist() == index["domain"].tolist()


def test_conflicting_duplicate_rows_are_refused_naming_the_clip_and_both_rows(tree, tmp_path):
    gt = tmp_path / "gt"
    shutil.copytree(tree / "ground_truth", gt)
    csv = gt / CSV
    first = csv.read_text().splitlines()[0]
    name, value = first.split(",")
    csv.write_text(csv.read_text() + f"{name},{1 - int(value)}\n")
    with pytest.raises(AsdError) as err:
        index_dataset(tree, ground_truth=gt)
    message = str(err.value)
    assert name in message and str(csv) in message
    last = len(csv.read_text().splitlines())
    assert "row 1" in message and f"row {last}" in message, message


def test_an_exact_duplicate_row_is_accepted(tree, tmp_path):
    gt = tmp_path / "gt"
    shutil.copytree(tree / "ground_truth", gt)
    csv = gt / CSV
    csv.write_text(csv.read_text() + csv.read_text().splitlines(keepends=True)[0])
    assert len(index_dataset(tree, ground_truth=gt)) == len(index_dataset(tree))


def test_labels_without_domain_files_name_the_file_to_add(tree, tmp_path, capsys):
    gt = tmp_path / "gt"
    shutil.copytree(tree / "ground_truth", gt)
    shutil.rmtree(gt / "domain")
    argv = ["evaluate", "--embedding", "mean-logmel", "--data", str(tree), "--quiet"]
    argv += ["--workdir", str(tmp_path / "work"), "--ground-truth", str(gt)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "domain" in err and CSV in err, err
