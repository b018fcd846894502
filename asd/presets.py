"""Named starting points of an experiment: a name on the command line -> a :class:`Config`.

Kept apart from :mod:`asd.config` because a preset is a measured choice (benchmarks,
README results) that changes with the evidence, while the config tree is the schema.
"""

from __future__ import annotations

from typing import Any

from asd.config import Config
from asd.errors import AsdError

QUICK: dict[str, Any] = {
    "encoder.width": 8,
    "encoder.freq_stride": 1,
    "encoder.pool": "freq",
    "encoder.freq_bands": 16,
    "train.epochs": 15,
    "train.batch_size": 32,
    "train.lr": 0.001,
    "train.restarts": 0,
    "train.crop_frames": 64,
    "augment.n_views": 3,
    "loss.temperature": 0.1,
    "scoring.family": "ensemble",
    "scoring.members": ("logmel/meanstd", "logmel/max"),
}
"""The quick preset's settings, chosen by measurement (benchmarks/quality.py; README results).

Its detector is the label-free ensemble of the log-mel's mean + std and its per-band max over
time, each standardised by its out-of-fold normal-training scores, combined by the max of z (the
default ``scoring.combine``):
on the synthetic set it beat every single pooling on tuned and held-out machine types, and it
keeps most of the max's lead on real valve (76 % against 81 %; mean + std alone 51 %). The
small encoder it trains (under a minute at this size) is scored alone beside it: on tens of
clips it scored near chance, so no ensemble with it was kept (README results)."""

TWFR_GMM: dict[str, Any] = {
    "scoring.family": "reference",
    "scoring.reference": "twfr",
    "scoring.estimator": "gmm",
    "scoring.gmm_components": 2,
    "scoring.gmm_covariance": "full",
    "scoring.gmm_reg": 1e-6,
    "scoring.domain_strategy": "pooled",
}
"""TWFR-GMM (Guan et al., ICASSP 2023) as published: log-mel pooled by GWRP with the authors'
per-machine decays, a 2-component full-covariance GaussianMixture per section on source and
target clips together. Untrained; its decays were tuned on DCASE 2022 dev test labels."""

PRESETS: dict[str, Config] = {
    "paper": Config(),
    "smoke": Config().with_overrides(
        {
            "train.epochs": 2,
            "train.batch_size": 8,
            "train.lr": 0.001,
            "train.crop_frames": 32,
            "augment.n_views": 3,
            "loss.temperature": 0.1,
        }
    ),
    "quick": Config().with_overrides(QUICK),
    "twfr-gmm": Config().with_overrides(TWFR_GMM),
}
"""Named starting points: 'paper' (the paper's defaults), 'smoke' (seconds on a CPU),
'quick' (the best detector measured to train in <= 10 min on a 2-core CPU, 7 x 50 clips of 4 s;
see the README's results for how it was chosen), 'twfr-gmm' (the published TWFR-GMM, untrained,
to compare against by name)."""


def preset(name: str) -> Config:
    """The named preset, or AsdError listing the known names."""
    if name not in PRESETS:
        raise AsdError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]
