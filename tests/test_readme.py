"""What the README states about presets, thresholds and defaults, checked against the code.

Each test reads the number or name out of README.md (a changed README fails until the code
agrees, and a changed default fails until the README does).
"""

import re
from pathlib import Path

import pytest
import torch
import yaml

from asd.cli.main import build_parser
from asd.config import ESTIMATORS, SCORERS, Config
from asd.detect.detector import reported_scorers
from asd.detect.metrics import MAX_FPR
from asd.model.encoder import Encoder
from asd.presets import preset
from asd.sweep.rows import OBJECTIVE
from asd.sweep.settings import DEFAULT_WORKDIR
from asd.sweep.space import SWEEP_KEYS, load_space, resolve_space
from asd.tracking.uri import default_tracking_uri

REPO = Path(__file__).resolve().parents[1]
README = " ".join((REPO / "README.md").read_text().split())  # one line: statements wrap


def stated(pattern: str) -> tuple[str, ...]:
    """The groups of the README's one match of ``pattern`` (whitespace as in the README)."""
    found = re.findall(pattern, README)
    assert len(found) == 1, f"the README should state {pattern!r} once, found {len(found)}"
    return found[0] if isinstance(found[0], tuple) else (found[0],)


def _number(text: str) -> float:
    return float({"two": 2, "six": 6}.get(text, text))


def test_paper_preset_is_the_papers_point():
    tau, batch, lr, views, restarts = stated(
        r"`paper` \| the paper's encoder alone \(τ ([\d.]+), batch (\d+), lr ([\d.]+), "
        r"(\d+) views, (\d+) warm restarts\), `ml` \+ `elliptic`"
    )
    cfg = preset("paper")
    assert cfg.loss.temperature == float(tau)
    assert cfg.train.batch_size == int(batch)
    assert cfg.train.lr == float(lr)
    assert cfg.augment.n_views == int(views)
    assert cfg.train.restarts == int(restarts)
    assert (cfg.scoring.family, cfg.scoring.pool) == ("encoder", "own")  # the encoder alone
    assert cfg.loss.aux_weight == 0.0  # NT-Xent alone
    assert {"ml", "elliptic"} <= set(reported_scorers(cfg))
    assert cfg == Config(), "the paper's values are the config's defaults"


def test_quick_preset_is_the_max_of_z_ensemble_of_two_untrained_members():
    mean_std, maximum, scorer = stated(
        r"`quick` \| max of z over two untrained members: the log-mel's (mean \+ std) and its "
        r"(per-band max) over time \(`(\w+)` scorer\)"
    )
    cfg = preset("quick").scoring
    assert (mean_std, maximum) == ("mean + std", "per-band max")
    assert cfg.family == "ensemble" and cfg.combine == "max"
    assert cfg.members == ("logmel/meanstd", "logmel/max")  # untrained: log-mel frames only
    assert cfg.estimator == scorer == "ml"


def test_quicks_encoder_alone_is_as_the_results_table_says():
    width, epochs, pool = stated(
        r"`quick`'s encoder alone \(width (\d+), (\d+) epochs, (\w+) pooling\)"
    )
    cfg = preset("quick")
    assert cfg.encoder.width == int(width)
    assert cfg.train.epochs == int(epochs)
    assert cfg.scoring.pool == pool  # the encoder member scored alone beside the ensemble


def test_twfr_gmm_preset_is_untrained_gwrp_with_a_two_component_gmm():
    (components,) = stated(
        r"`twfr-gmm` \| TWFR-GMM as published \(GWRP with the authors' per-machine decays, "
        r"(\d+)-component GMM\); untrained"
    )
    cfg = preset("twfr-gmm").scoring
    assert (cfg.family, cfg.reference, cfg.estimator) == ("reference", "twfr", "gmm")
    assert cfg.gmm_components == int(components)


def test_smoke_preset_trains_for_the_stated_epochs():
    (epochs,) = stated(r"`smoke` \| (\w+) epochs of a tiny encoder")
    cfg = preset("smoke")
    assert cfg.train.epochs == _number(epochs)
    assert cfg.encoder.width <= Config().encoder.width


def test_thresholds_are_the_stated_quantile_of_out_of_fold_scores():
    (quantile,) = stated(
        r"Decision thresholds: the `scoring.threshold_quantile` \(([\d.]+)\) quantile of the "
        r"normal training clips' out-of-fold scores \(`scoring.threshold_folds` refits per "
        r"section\)"
    )
    (flagged,) = stated(r"so about (\d+) % of new normal clips are flagged")
    cfg = Config().scoring
    assert cfg.threshold_quantile == float(quantile)
    assert cfg.threshold_folds == 5  # out of fold: refits that never saw the clip they score
    assert round(100 * (1 - cfg.threshold_quantile)) == int(flagged)
    stated(r"Decision thresholds are a quantile of the same out-of-fold scores")
    for name in ("paper", "quick", "smoke", "twfr-gmm"):
        assert preset(name).scoring.threshold_folds > 0, f"{name}: thresholds in-sample"


def test_frames_are_the_stated_log_mel():
    n_fft, hop, mels = stated(r"log-mel spectrogram \(n_fft (\d+), hop (\d+), (\d+) mels")
    cfg = Config().features
    assert (cfg.n_fft, cfg.hop_length, cfg.n_mels) == (int(n_fft), int(hop), int(mels))
    (channel,) = stated(r"`features.channel=(\d+)` \(the default\)")
    assert cfg.channel == int(channel)


def test_the_encoder_is_a_resnet_18_with_a_two_layer_head_of_the_stated_size():
    (dim,) = stated(r"ResNet-18 \+ 2-layer projection head, (\d+)-d")
    cfg = Config()
    assert cfg.encoder.arch == "resnet" and cfg.encoder.embedding_dim == int(dim)
    encoder = Encoder(cfg.encoder.__class__(width=8), 16)
    linear = [m for m in encoder.head if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 2 and linear[-1].out_features == int(dim)
    assert encoder.backbone_dim == 8 * 8  # four stages, doubling: ResNet-18's layout
    stated(r"Adam with cosine warm restarts")
    assert cfg.train.restarts > 0


def test_the_scorers_and_the_metric_are_the_stated_ones():
    stated(r"`EmpiricalCovariance` \(`ml`\) or `EllipticEnvelope` \(`elliptic`\), cosine kNN")
    assert ESTIMATORS == ("ml", "elliptic") and set(SCORERS) == {"ml", "elliptic", "knn", "gmm"}
    (p,) = stated(r"AUC \(source\), AUC \(target\) and pAUC \(p = ([\d.]+)\)")
    assert MAX_FPR == float(p)
    stated(r"score every trial with both `ml` and `elliptic`")
    for family in ("encoder", "reference", "fusion"):
        cfg = Config().with_overrides({"scoring.family": family, "scoring.estimator": "knn"})
        assert reported_scorers(cfg)[:2] == ("ml", "elliptic")


def test_the_embedded_defaults_are_a_local_sqlite_store_in_the_work_folder():
    (db,) = stated(r"a local MLflow SQLite store \(`([\w./-]+)`, registry included\)")
    assert default_tracking_uri(DEFAULT_WORKDIR).endswith("/" + db)
    assert Path(db).parent == DEFAULT_WORKDIR
    (objective,) = stated(r"per-epoch validation score \(`(\w+)`:")
    assert OBJECTIVE == objective


def test_score_batches_by_the_stated_default():
    (batch,) = stated(r"`asd score --model` streams a folder in batches \(`--batch-size`, "
                      r"default (\d+)\)")  # fmt: skip
    args = build_parser().parse_args(["score", "--model", "m", "--machine", "fan", "clips"])
    assert args.batch_size == int(batch)


def test_a_spaces_sweep_section_takes_the_stated_run_defaults():
    (listed,) = stated(r"A space's `sweep:` section may also set the run's defaults: ([^(]+)\(")
    keys = re.findall(r"`(\w+)`", listed)
    assert len(keys) >= 7 and set(keys) <= set(SWEEP_KEYS)


@pytest.mark.parametrize("name", ["paper", "default", "smoke"])
def test_the_shipped_spaces_are_what_the_readme_says(name):
    raw = yaml.safe_load(resolve_space(name).read_text())
    if name == "paper":
        space = load_space(resolve_space(name))
        stated(r"`search_spaces/paper.yaml`: the paper's single point")
        assert space.base == preset("paper").with_overrides(raw.get("fixed") or {})
        assert all(p.kind == "choice" and len(p.values) == 1 for p in space.params)
        assert space.sweep["num_samples"] == 1
        sampled = space.config_for({p.key: p.values[0] for p in space.params})
        assert sampled.loss.temperature == preset("paper").loss.temperature
    elif name == "default":
        stated(r"\(`loss.aux_weight`, 0 = the paper's NT-Xent alone\)")
        keys = set(raw["params"])  # that they resolve is test_space.py's (a slow corner check)
        assert {"loss.temperature", "train.batch_size", "train.lr", "train.restarts",
                "augment.n_views", "encoder.width", "encoder.pool", "loss.aux_weight",
                "scoring.family", "scoring.pool", "scoring.reference", "scoring.members",
                "scoring.combine", "scoring.estimator", "scoring.gmm_components",
                "scoring.gmm_covariance"} <= keys  # fmt: skip
        # "every augmentation setting": each range of pitch, noise and masks (the recipe cycle
        # and the smallest pitch shift stay at the paper's values)
        augment = {k for k in Config().to_flat() if k.startswith("augment.")}
        assert augment - keys == {"augment.recipes", "augment.pitch_min_semitones"}
        assert 0.0 in raw["params"]["loss.aux_weight"]["choice"]
    else:
        space = load_space(resolve_space(name))
        stated(r"`smoke.yaml`: tiny, for CI and the demo")
        assert space.base.train.epochs <= 2 and space.sweep["num_samples"] <= 3
