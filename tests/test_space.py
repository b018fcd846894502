from pathlib import Path

import pytest

from asd.config import Config
from asd.errors import AsdError
from asd.sweep.space import load_space, parse_space

SPACES = sorted(Path(__file__).resolve().parents[1].joinpath("search_spaces").glob("*.yaml"))


def test_the_shipped_spaces_are_there():
    assert {p.stem for p in SPACES} >= {"paper", "default", "smoke"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_every_shipped_space_resolves_every_key(path):
    space = load_space(path)
    flat = Config().to_flat()
    for param in space.params:
        assert param.key in flat
    assert space.config_for({p.key: p.values[0] for p in space.params}) is not None
    assert space.to_tune().keys() == {p.key for p in space.params}


def test_paper_space_is_the_papers_single_point():
    space = load_space(SPACES[[p.stem for p in SPACES].index("paper")])
    cfg = space.config_for({"loss.temperature": 0.05})
    assert (cfg.loss.temperature, cfg.train.batch_size, cfg.train.lr) == (0.05, 48, 0.5)
    assert space.sweep["num_samples"] == 1


def test_default_space_covers_the_issue_settings():
    space = load_space(SPACES[[p.stem for p in SPACES].index("default")])
    keys = {p.key for p in space.params}
    assert {"loss.temperature", "train.batch_size", "train.lr", "train.restarts"} <= keys
    assert {"augment.pitch_max_semitones", "augment.noise_snr_db_min", "augment.n_views"} <= keys
    assert {"augment.mask_short_ms", "augment.mask_long_ms"} <= keys
    assert {"encoder.width", "encoder.pool", "loss.aux_weight", "loss.aux_head"} <= keys
    assert {"loss.aux_margin", "loss.aux_subclusters", "encoder.freq_stride"} <= keys
    weights = next(p for p in space.params if p.key == "loss.aux_weight").values
    assert 0.0 in weights  # NT-Xent alone (the paper's loss) stays a candidate
    # issue 9: the detector family, scorer, kNN's k and the fusion weight are searched too
    assert {"scoring.family", "scoring.reference", "scoring.estimator"} <= keys
    assert {"scoring.knn_k", "scoring.fusion_weight"} <= keys
    choices = {p.key: set(p.values) for p in space.params if p.kind == "choice"}
    assert choices["scoring.family"] == {"encoder", "reference", "fusion", "ensemble"}
    assert choices["scoring.estimator"] == {"ml", "elliptic", "knn", "gmm"}
    # issue 16: pooling (with GWRP decays and percentiles), members, the rule, GMM settings
    assert {"max", "meanstd", "p95", "gwrp0.5"} <= choices["scoring.reference"]
    assert {"own", "max"} <= choices["scoring.pool"]
    assert "logmel/meanstd,logmel/max" in choices["scoring.members"]
    assert {"scoring.combine", "scoring.gmm_components", "scoring.gmm_covariance"} <= keys


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"params": {"loss.tau": {"uniform": [0.1, 0.2]}}}, "unknown config key 'loss.tau'"),
        ({"colour": "blue"}, "unknown key"),
        ({"params": {"train.lr": {"uniform": [0.2, 0.1]}}}, "empty range"),
        ({"params": {"train.lr": {"uniform": [0.1, 0.1]}}}, "empty range"),
        ({"params": {"train.lr": {"loguniform": [0.0, 0.1]}}}, "positive low"),
        ({"params": {"train.lr": {"normal": [0.0, 0.1]}}}, "unknown distribution"),
        ({"params": {"train.batch_size": {"choice": []}}}, "non-empty"),
        ({"params": {"train.epochs": {"int": [1.5, 3]}}}, "whole numbers"),
        ({"params": {"loss.temperature": {"uniform": [-0.1, 0.2]}}}, "impossible combination"),
        (
            {
                "params": {
                    "augment.noise_snr_db_min": {"uniform": [6.0, 20.0]},
                    "augment.noise_snr_db_max": {"uniform": [10.0, 24.0]},
                }
            },
            "impossible combination",
        ),
        ({"fixed": {"train.epochs": 0}}, "train.epochs"),
        ({"base": "turbo"}, "unknown preset"),
        ({"sweep": {"num_samples": 0}}, "positive integer"),
        ({"sweep": {"workers": 2}}, "unknown key sweep.workers"),
        ({"params": {"scoring.family": {"choice": ["encoder", "ensemble"]}}}, "scoring.family"),
        ({"params": {"scoring.fusion_weight": {"uniform": [0.5, 1.5]}}}, "fusion_weight"),
        ({"params": {"scoring.knn_k": {"int": [0, 8]}}}, "scoring.knn_k"),
        ({"sweep": {"gpus_per_trial": -1}}, "sweep.gpus_per_trial must be a non-negative"),
        ({"sweep": {"cpus_per_trial": 0}}, "sweep.cpus_per_trial must be a positive number"),
        ({"sweep": {"tune_machines": "fan"}}, "sweep.tune_machines must be a list"),
        ({"sweep": {"tune_machines": []}}, "at least one machine type"),
    ],
)
def test_bad_spaces_fail_before_any_trial(raw, message):
    with pytest.raises(AsdError, match=message):
        parse_space(raw, name="bad", source="bad.yaml")


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(AsdError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("params: [unclosed")
    with pytest.raises(AsdError, match="not valid YAML"):
        load_space(broken)


def test_int_params_are_inclusive_in_tune():
    space = parse_space({"params": {"augment.n_views": {"int": [2, 4]}}}, name="x")
    domain = space.to_tune()["augment.n_views"]
    assert (domain.lower, domain.upper) == (2, 5)
    assert space.max_epochs == space.base.train.epochs


def test_exponent_numbers_without_a_dot_are_numbers():
    # PyYAML reads 1e-3 as a string; a space must still treat it as a number.
    import yaml

    raw = yaml.safe_load("params:\n  train.lr: {loguniform: [1e-4, 1e-2]}\n")
    space = parse_space(raw, name="x")
    assert space.params[0].values == (1e-4, 1e-2)


def test_sweep_section_sets_resources_and_machine_groups():
    space = parse_space(
        {
            "sweep": {
                "cpus_per_trial": 2,
                "gpus_per_trial": 0.5,
                "workers_per_trial": 0,
                "tune_machines": ["fan", "valve"],
                "holdout_machines": ["gearbox"],
            }
        },
        name="groups",
    )
    assert space.sweep == {
        "cpus_per_trial": 2.0,
        "gpus_per_trial": 0.5,
        "workers_per_trial": 0,
        "tune_machines": ("fan", "valve"),
        "holdout_machines": ("gearbox",),
    }


def test_shipped_space_is_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_space("default").name == "default"
    assert load_space("smoke.yaml").name == "smoke"
    with pytest.raises(AsdError, match=r"shipped spaces: default, paper, smoke"):
        load_space("nonesuch")
    with pytest.raises(AsdError, match="does not exist"):
        load_space(tmp_path / "sub" / "default.yaml")  # a path is a path, not a name
