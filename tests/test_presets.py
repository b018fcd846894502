import pytest

from asd.config import Config
from asd.errors import AsdError
from asd.presets import PRESETS, QUICK, TWFR_GMM, preset


def test_paper_is_the_default_config():
    assert preset("paper") == Config()


def test_every_preset_is_a_valid_config_reachable_by_name():
    for name, cfg in PRESETS.items():
        assert preset(name) is cfg
        cfg.validate()
        assert Config.from_json(cfg.to_json()) == cfg


def test_twfr_gmm_is_the_paper_plus_its_listed_changes():
    twfr, paper = preset("twfr-gmm").to_flat(), preset("paper").to_flat()
    assert {k for k in twfr if twfr[k] != paper[k]} <= set(TWFR_GMM)  # some equal defaults
    assert all(twfr[k] == v for k, v in TWFR_GMM.items())
    assert (twfr["scoring.family"], twfr["scoring.estimator"]) == ("reference", "gmm")


def test_unknown_preset():
    with pytest.raises(AsdError, match="unknown preset 'fast'"):
        preset("fast")


def test_quick_preset_is_the_paper_plus_its_listed_changes():
    quick, paper = preset("quick").to_flat(), preset("paper").to_flat()
    changed = {k for k in quick if quick[k] != paper[k]}
    assert changed == set(QUICK)
    assert quick["encoder.width"] < paper["encoder.width"]  # what keeps it inside a CPU budget
    assert paper["loss.aux_weight"] == 0 and paper["encoder.width"] == 64  # the paper unchanged
    # issue 16: quick's detector is the measured label-free ensemble; the paper's is the encoder
    assert quick["scoring.family"] == "ensemble" and quick["scoring.combine"] == "max"
    assert quick["scoring.members"] == ["logmel/meanstd", "logmel/max"]
    assert (paper["scoring.family"], paper["scoring.pool"]) == ("encoder", "own")
    assert set(paper["scoring.members"]) == set() and paper["scoring.estimator"] == "ml"
