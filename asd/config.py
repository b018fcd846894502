"""One typed config tree for a whole experiment, with the paper's values as defaults.

Every setting a trial may change lives here under a dotted key (``loss.temperature``),
the same keys that search spaces in ``search_spaces/*.yaml`` and MLflow params use.
Unknown keys and wrong types raise :class:`~asd.errors.AsdError` before any work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asd.errors import AsdError
from asd.pooling_spec import pooling_error

DEFAULT_WORKDIR = Path("asd-work")
"""The work folder (feature cache, runs, sweeps, local MLflow store) of every command when
none is given."""


@dataclass(frozen=True)
class FeatureConfig:
    """How a waveform becomes a log-mel spectrogram (the paper's settings)."""

    sample_rate: int = 16_000
    """Clips at other rates are resampled to this on load."""
    n_fft: int = 2048
    """STFT size in samples (128 ms at 16 kHz)."""
    hop_length: int = 512
    """STFT hop in samples (32 ms): a 10 s clip has 313 frames."""
    n_mels: int = 128
    """Mel bands."""
    f_min: float = 0.0
    """Lowest mel filter edge in Hz."""
    f_max: float = 8_000.0
    """Highest mel filter edge in Hz (Nyquist at 16 kHz)."""
    top_db_floor: float = -100.0
    """Log-mel floor in dB: power below 10**(floor/10) is clipped to it."""
    channel: int = 0
    """Channel of a multi-channel clip to analyse (0 = the first, as the MIMII baseline reads
    its 8-microphone array); -1 averages all channels, which for an array is a beamformer that
    colours the spectrum by where the sound comes from."""

    def key(self) -> str:
        """A short hash naming the feature cache of this configuration."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class AugmentConfig:
    """The augmented views of each clip; the original clip is always a positive too.

    View ``j`` uses recipe ``recipes[j % len(recipes)]``, so ``n_views=6`` with the default
    recipes is the paper's six copies, and ``n_views=3`` still covers pitch, noise and mask.
    """

    n_views: int = 6
    """Augmented views per clip (the paper: six)."""
    recipes: tuple[str, ...] = (
        "pitch_up",
        "noise",
        "mask_short",
        "pitch_down",
        "noise",
        "mask_long",
    )
    """Cycle of view recipes: pitch_up, pitch_down, noise, mask_short, mask_long."""
    pitch_min_semitones: float = 1.0
    """Smallest pitch shift magnitude in semitones."""
    pitch_max_semitones: float = 12.0
    """Largest pitch shift magnitude in semitones (12 = one octave)."""
    noise_snr_db_min: float = 6.0
    """White noise at least this many dB below the signal (the loudest noise)."""
    noise_snr_db_max: float = 24.0
    """White noise at most this many dB below the signal (the quietest noise)."""
    mask_short_ms: float = 500.0
    """Length of the short time mask in milliseconds."""
    mask_long_ms: float = 1000.0
    """Length of the long time mask in milliseconds."""


@dataclass(frozen=True)
class EncoderConfig:
    """ResNet-18 on 1-channel log-mels plus a Linear-ReLU-Linear projection head."""

    embedding_dim: int = 128
    """Output size of the projection head (the contrastive space)."""
    head_hidden_dim: int = 512
    """Hidden width of the projection head."""
    embed_from: str = "backbone"
    """Which vector scoring uses: 'backbone' (512-d, before the head) or 'projection' (128-d).

    The head is trained to be invariant to the augmentations and discards detail anomalies
    live in; on the synthetic set the backbone scored 67.6 % vs 57.4 % (same weights).
    """
    width: int = 64
    """Channels of the first ResNet stage (64 = ResNet-18); the stages use 1, 2, 4, 8 times it."""
    pool: str = "avg"
    """Backbone pooling: 'avg' (paper, over time and frequency), 'freq' (over time only,
    keeping ``freq_bands`` frequency bands), 'meanstd' (mean and standard deviation over time)."""
    freq_bands: int = 4
    """Frequency bands ``pool='freq'`` keeps (a clip-mean spectrum needs ~16 on synth data)."""
    arch: str = "resnet"
    """'resnet' (ResNet-18, the paper) or 'tdnn' (dilated 1-D convs over time, mels as channels)."""
    freq_stride: int = 2
    """Frequency stride of ResNet stages 2-4: 2 = ResNet-18 (n_mels/32 rows reach the pooling),
    1 = stride in time only (n_mels/4 rows), so fine spectral detail survives."""


@dataclass(frozen=True)
class LossConfig:
    """NT-Xent with the original clip and its views as mutual positives."""

    temperature: float = 0.05
    """Softmax temperature tau (the paper: 0.05)."""
    aux_weight: float = 0.0
    """Weight of the margin softmax on the name labels (0 = NT-Xent alone, the paper)."""
    aux_head: str = "arcface"
    """Auxiliary head: 'arcface' (fixed scale, additive angular margin) or 'adacos'."""
    aux_margin: float = 0.5
    """ArcFace's additive angular margin in radians (ignored by AdaCos)."""
    aux_scale: float = 30.0
    """ArcFace's logit scale (AdaCos adapts its own)."""
    aux_subclusters: int = 1
    """Centres per class (sub-cluster AdaCos uses 16; 1 = one centre per class)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: Adam with cosine annealing and warm restarts."""

    epochs: int = 40
    """Passes over the normal training clips."""
    batch_size: int = 48
    """Clips per step across all devices (views multiply the encoder's batch)."""
    lr: float = 0.5
    """Adam learning rate at the top of each cosine cycle (the paper: 0.5)."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    restarts: int = 3
    """Warm restarts of the cosine schedule: training runs restarts + 1 equal cycles."""
    lr_min: float = 0.0
    """Learning rate at the bottom of each cosine cycle."""
    crop_frames: int = 313
    """Frames per training crop (313 = 10 s); shorter clips are tiled to this length."""
    seed: int = 0
    """Seed for weights, batches, crops and augmentation."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    channels_last: bool = True
    """channels_last memory format on CUDA (ignored on CPU)."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value; 0 disables clipping."""
    compile: str = "auto"
    """torch.compile the encoder's step: 'auto' (on CUDA only), 'on' or 'off'."""
    compile_backend: str = "inductor"
    """torch.compile backend: 'inductor' (generated kernels); 'aot_eager' traces only."""


@dataclass(frozen=True)
class ScoringConfig:
    """The detector: which frames, how they are pooled over time, and how they are scored.

    A detector is one or more *members* (frames -> pooling -> per-section scorer); see
    :mod:`asd.detect.detector`. ``family`` picks the members: the encoder alone, the untrained
    log-mel reference alone, their weighted fusion, or an ``ensemble`` of ``members``.
    """

    estimator: str = "ml"
    """The scorer a trial is judged by: 'ml' (EmpiricalCovariance), 'elliptic' (EllipticEnvelope,
    robust MCD), 'knn' (cosine kNN) or 'gmm' (GaussianMixture); 'ml' and 'elliptic' are always
    reported too."""
    domain_strategy: str = "min"
    """'min': shared covariance, distance to the nearer domain mean; 'pooled': one Gaussian."""
    threshold_quantile: float = 0.9
    """Decision threshold: this quantile of the normal training clips' out-of-fold scores."""
    support_fraction: float = 0.0
    """EllipticEnvelope support fraction; 0 lets scikit-learn choose."""
    family: str = "encoder"
    """What a trial's detector is: 'encoder' (learned frames, pooled by ``pool``), 'reference'
    (untrained log-mel frames pooled by ``reference``, no training), 'fusion' (weighted mean of
    both standardised scores) or 'ensemble' (the ``members``, combined by ``combine``)."""
    pool: str = "own"
    """Temporal pooling of the encoder's per-time-step features: 'own' (the encoder's own
    pooling, the paper's detector) or a pooling spec (mean, max, meanstd, p90, gwrp0.9, a+b)."""
    reference: str = "mean"
    """Temporal pooling of the log-mel for the 'reference' family (a pooling spec: mean,
    meanstd, max, p90, gwrp0.5, mean+max ...; 'mean_std' is read as meanstd)."""
    members: tuple[str, ...] = ()
    """Ensemble members as 'frames/pooling[/scorer]' (frames: logmel or encoder), e.g.
    ('logmel/meanstd', 'logmel/max'); a member without a scorer uses the evaluated one."""
    combine: str = "max"
    """How an ensemble combines its members' standardised scores: 'max' or 'mean' of z."""
    knn_k: int = 5
    """Neighbours averaged by the 'knn' scorer (capped by the size of a domain's set)."""
    gmm_components: int = 2
    """Mixture components of the 'gmm' scorer per section (TWFR-GMM: 2)."""
    gmm_covariance: str = "full"
    """GaussianMixture covariance type: 'full', 'diag', 'tied' or 'spherical'."""
    gmm_reg: float = 1e-3
    """GMM covariance regulariser, relative to the mean per-dimension variance of the data."""
    fusion_weight: float = 0.5
    """Weight of the encoder's standardised score in 'fusion'; the reference gets 1 - it."""
    threshold_folds: int = 5
    """Out-of-fold refits per section for thresholds and ensemble statistics; 0 = in-sample."""


@dataclass(frozen=True)
class Config:
    """A whole experiment: everything a trial may change, and nothing about where it runs."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted keys replaced, e.g. ``{"loss.temperature": 0.1}``.

        Unknown keys and values of the wrong type raise AsdError; ints are accepted for
        floats and lists for tuples (YAML and MLflow give those).
        """
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            sections = {f.name: f for f in dataclasses.fields(self)}
            if section not in sections or not name:
                raise AsdError(f"unknown config key '{key}' (sections: {', '.join(sections)})")
            hints = _field_hints(type(getattr(self, section)))
            if name not in hints:
                raise AsdError(
                    f"unknown config key '{key}' (known in {section}: {', '.join(hints)})"
                )
            grouped.setdefault(section, {})[name] = _coerce(key, value, hints[name])
        changes = {
            section: dataclasses.replace(getattr(self, section), **values)
            for section, values in grouped.items()
        }
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def to_flat(self) -> dict[str, Any]:
        """Dotted keys to plain values (tuples as lists): MLflow params, JSON, search spaces."""
        flat: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            for name, value in dataclasses.asdict(getattr(self, section.name)).items():
                flat[f"{section.name}.{name}"] = list(value) if isinstance(value, tuple) else value
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_flat` (missing keys keep their defaults)."""
        return cls().with_overrides(flat)

    def validate(self) -> None:
        """Reject settings no trial could run with, naming the setting."""
        checks = _training_checks(self) + _scoring_checks(self.scoring)
        for key, value in self.to_flat().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise AsdError(f"{key} must be a finite number, got {value}")
        for ok, message in checks:
            if not ok:
                raise AsdError(message)

    def to_json(self) -> str:
        """The flat config as JSON: what checkpoints and artifacts carry."""
        return json.dumps(self.to_flat(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        """Inverse of :meth:`to_json`."""
        return cls.from_flat(json.loads(text))


RECIPES = ("pitch_up", "pitch_down", "noise", "mask_short", "mask_long")
"""The augmentation recipes a view can use."""

ESTIMATORS = ("ml", "elliptic")
"""Covariance estimators: maximum likelihood and the robust elliptic envelope."""

SCORERS = ("ml", "elliptic", "knn", "gmm")
"""Every per-section scorer: the two covariance estimators, cosine kNN and a Gaussian mixture."""

ALWAYS_SCORED = ("ml", "elliptic")
"""Scorers every evaluation reports besides the configured one (the paper's two)."""

FAMILIES = ("encoder", "reference", "fusion", "ensemble")
"""Detector families: learned, untrained reference, their score fusion, or an ensemble."""

FRAMES = ("logmel", "encoder")
"""What a detector member pools over time: log-mel frames, or the encoder's features."""

COMBINES = ("max", "mean")
"""How an ensemble combines its members' standardised scores."""

GMM_COVARIANCES = ("full", "diag", "tied", "spherical")
"""GaussianMixture covariance types."""

POOLS = ("avg", "freq", "meanstd")
"""Backbone poolings: global average, time average keeping frequency bands, time mean+std."""

AUX_HEADS = ("arcface", "adacos")
"""Margin softmax heads of the auxiliary name-label task."""

DOMAIN_STRATEGIES = ("min", "pooled")
"""'min': shared covariance, nearest domain centre; 'pooled': one Gaussian per section."""


def _training_checks(cfg: Config) -> list[tuple[bool, str]]:
    """(ok, message) per rule of what training uses: log-mel, views, encoder, loss, loop."""
    f, a, e, loss, t = cfg.features, cfg.augment, cfg.encoder, cfg.loss, cfg.train
    return [
        (f.sample_rate > 0, f"features.sample_rate must be positive, got {f.sample_rate}"),
        (f.n_fft >= 16, f"features.n_fft must be at least 16 samples, got {f.n_fft}"),
        (f.n_mels > 0, "features.n_mels must be positive"),
        (
            f.n_mels <= f.n_fft // 2 + 1,
            f"features.n_mels={f.n_mels} exceeds the {f.n_fft // 2 + 1} frequency bins of "
            f"features.n_fft={f.n_fft}",
        ),
        (f.hop_length > 0, "features.hop_length must be positive"),
        (f.f_max > f.f_min, "features.f_max must exceed f_min"),
        (
            f.f_max <= f.sample_rate / 2,
            "features.f_max must not exceed Nyquist (features.sample_rate / 2)",
        ),
        (a.n_views >= 1, "augment.n_views must be at least 1"),
        (len(a.recipes) >= 1, "augment.recipes must not be empty"),
        (set(a.recipes) <= set(RECIPES), f"augment.recipes must be among {', '.join(RECIPES)}"),
        (f.channel >= -1, "features.channel must be a channel number (0 = first) or -1 (mean)"),
        (
            0 <= a.pitch_min_semitones <= a.pitch_max_semitones <= 12,
            "augment.pitch_*_semitones must satisfy 0 <= min <= max <= 12",
        ),
        (
            0 < a.noise_snr_db_min <= a.noise_snr_db_max,
            "augment.noise_snr_db_* must satisfy 0 < min <= max",
        ),
        (0 < a.mask_short_ms and 0 < a.mask_long_ms, "augment.mask_*_ms must be positive"),
        (e.head_hidden_dim > 0, "encoder.head_hidden_dim must be positive"),
        (e.embedding_dim > 0, "encoder.embedding_dim must be positive"),
        (
            e.embed_from in ("projection", "backbone"),
            "encoder.embed_from must be 'projection' or 'backbone'",
        ),
        (e.width >= 4, "encoder.width must be at least 4"),
        (e.pool in POOLS, f"encoder.pool must be one of {', '.join(POOLS)}"),
        (e.freq_bands >= 1, "encoder.freq_bands must be at least 1"),
        (e.freq_stride in (1, 2), "encoder.freq_stride must be 1 or 2"),
        (
            (e.arch, e.pool) != ("tdnn", "freq") and e.arch in ("resnet", "tdnn"),
            "encoder.arch must be 'resnet' or 'tdnn' (tdnn: pool avg or meanstd)",
        ),
        (loss.temperature > 0, "loss.temperature must be positive"),
        (loss.aux_weight >= 0, "loss.aux_weight must be >= 0"),
        (loss.aux_head in AUX_HEADS, f"loss.aux_head must be one of {', '.join(AUX_HEADS)}"),
        (0 <= loss.aux_margin < 1.5, "loss.aux_margin must be in [0, 1.5) radians"),
        (loss.aux_scale > 0, "loss.aux_scale must be positive"),
        (loss.aux_subclusters >= 1, "loss.aux_subclusters must be at least 1"),
        (t.epochs >= 1, "train.epochs must be at least 1"),
        (t.batch_size >= 2, "train.batch_size must be at least 2 (negatives are needed)"),
        (t.lr > 0, "train.lr must be positive"),
        (0 <= t.lr_min <= t.lr, "train.lr_min must be between 0 and train.lr"),
        (t.grad_clip >= 0, "train.grad_clip must be >= 0 (0 disables clipping)"),
        (t.restarts >= 0, "train.restarts must be >= 0"),
        (t.crop_frames >= 8, "train.crop_frames must be at least 8"),
    ]


def _scoring_checks(s: ScoringConfig) -> list[tuple[bool, str]]:
    """(ok, message) for each rule of the scoring section (see :meth:`Config.validate`)."""
    return [
        (s.estimator in SCORERS, f"scoring.estimator must be one of {SCORERS}"),
        (s.family in FAMILIES, f"scoring.family must be one of {FAMILIES}"),
        (not pooling_error(s.reference), f"scoring.reference: {pooling_error(s.reference)}"),
        (s.pool == "own" or not pooling_error(s.pool), f"scoring.pool: {pooling_error(s.pool)}"),
        (s.combine in COMBINES, f"scoring.combine must be one of {COMBINES}"),
        (s.family != "ensemble" or len(s.members) >= 1, "scoring.members is empty: an ensemble "
         "needs at least one 'frames/pooling[/scorer]' member"),
        *[(not _member_error(m), f"scoring.members: {_member_error(m)}") for m in s.members],
        (s.knn_k >= 1, "scoring.knn_k must be at least 1"),
        (s.gmm_components >= 1, "scoring.gmm_components must be at least 1"),
        (
            s.gmm_covariance in GMM_COVARIANCES,
            f"scoring.gmm_covariance must be one of {GMM_COVARIANCES}",
        ),
        (s.gmm_reg > 0, "scoring.gmm_reg must be positive"),
        (0 <= s.fusion_weight <= 1, "scoring.fusion_weight must be in [0, 1]"),
        (
            s.threshold_folds == 0 or s.threshold_folds >= 2,
            "scoring.threshold_folds must be 0 (in-sample) or at least 2",
        ),
        (
            s.domain_strategy in DOMAIN_STRATEGIES,
            "scoring.domain_strategy must be 'min' or 'pooled'",
        ),
        (0 < s.threshold_quantile < 1, "scoring.threshold_quantile must be in (0, 1)"),
        (0 <= s.support_fraction <= 1, "scoring.support_fraction must be in [0, 1]"),
    ]


def _member_error(spec: str) -> str:
    """Why ``spec`` is not a 'frames/pooling[/scorer]' member, or ''."""
    parts = spec.split("/")
    if len(parts) not in (2, 3):
        return f"member '{spec}' must be 'frames/pooling' or 'frames/pooling/scorer'"
    if parts[0] not in FRAMES:
        return f"member '{spec}': frames must be one of {FRAMES}"
    if len(parts) == 3 and parts[2] not in SCORERS:
        return f"member '{spec}': scorer must be one of {SCORERS}"
    if parts[1] == "own":
        return "" if parts[0] == "encoder" else f"member '{spec}': only encoder frames pool 'own'"
    return pooling_error(parts[1])


_HINTS: dict[type, dict[str, Any]] = {}


def _field_hints(section: type) -> dict[str, Any]:
    """A section's resolved field types, once per class.

    Resolving the string annotations on every override made checking the 4,096 corners of
    the default space take ~17 s.
    """
    if section not in _HINTS:
        _HINTS[section] = typing.get_type_hints(section)
    return _HINTS[section]


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's type, converting the harmless cases."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str) and "," in value:  # a search-space choice: "a,b"
            return tuple(v.strip() for v in value.split(","))
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise AsdError(f"config key '{key}' needs a list (or 'a,b'), got {value!r}")
        return tuple(str(v) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise AsdError(f"config key '{key}' has an unsupported type {hint}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise AsdError(f"config key '{key}' needs true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise AsdError(f"config key '{key}' needs an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise AsdError(f"config key '{key}' needs an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise AsdError(f"config key '{key}' needs a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise AsdError(f"config key '{key}' needs a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise AsdError(f"config key '{key}' needs a string, got {value!r}")
    raise AsdError(f"config key '{key}' has an unsupported type {hint}")
