"""ResNet-18 on 1-channel log-mels plus a projection head: the contrastive encoder.

Written out here (no torchvision) so the core needs only torch. The log-mel normalisation
lives inside the model as buffers, so a saved encoder scores raw dB features on its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asd.config import Config, EncoderConfig
from asd.errors import AsdError, one_line

BACKBONE_DIM = 512
"""Width of the ResNet-18 feature vector after global average pooling."""

_FORMAT = "asd-encoder/1"


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al., 2016)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride not in (1, (1, 1)) or in_ch != out_ch:
            # 1x1 projection so the shortcut matches the new shape
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, F, T) -> (B, out_ch, F/stride, T/stride) (stride per axis if a pair)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class Encoder(nn.Module):
    """ResNet-18 backbone (1 input channel) and a Linear-ReLU-Linear projection head.

    ``forward`` gives the projection the contrastive loss sees; ``embed`` gives the vector
    scoring uses (``cfg.embed_from``). Global pooling makes any clip length >= ~16 frames work.
    """

    mel_mean: Tensor
    mel_std: Tensor

    def __init__(self, cfg: EncoderConfig, n_mels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_mels = n_mels
        self.classes: tuple[str, ...] = ()
        """Name-label classes of the auxiliary head it was trained with (none for the paper)."""
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))
        base = cfg.width
        if cfg.arch == "tdnn":
            self.stem: nn.Module = nn.Identity()
            self.layers = tdnn_layers(n_mels, 8 * base)
        else:
            self.stem, self.layers = resnet_layers(cfg)
        self.head = nn.Sequential(
            nn.Linear(self.backbone_dim, cfg.head_hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.head_hidden_dim, cfg.embedding_dim),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def backbone_dim(self) -> int:
        """Size of the pooled backbone vector: 8 * width channels, times what pooling keeps."""
        per_channel = {"avg": 1, "freq": self.cfg.freq_bands, "meanstd": 2}[self.cfg.pool]
        return 8 * self.cfg.width * per_channel

    @property
    def embedding_dim(self) -> int:
        """Size of the vectors ``embed`` returns."""
        return self.cfg.embedding_dim if self.cfg.embed_from == "projection" else self.backbone_dim

    def set_normalization(self, mean: Any, std: Any) -> None:
        """Store per-mel-band stats of the normal train clips (dB); std is floored at 1e-6."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() != self.n_mels or std_t.numel() != self.n_mels:
            raise AsdError(
                f"normalisation stats have {mean_t.numel()}/{std_t.numel()} bands, "
                f"the encoder expects features.n_mels={self.n_mels}"
            )
        self.mel_mean.copy_(mean_t)
        self.mel_std.copy_(std_t.clamp_min(1e-6))

    def backbone(self, x: Tensor) -> Tensor:
        """(B, n_mels, T) dB -> (B, backbone_dim) pooled ResNet features (512 for the paper)."""
        return pool_features(self.feature_map(x), self.cfg.pool, self.cfg.freq_bands)

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, n_mels, T) dB -> (B, 8w, F', T') last-stage map, before any pooling."""
        x = (x - self.mel_mean[:, None]) / self.mel_std[:, None]
        if self.cfg.arch == "tdnn":  # mel bands are the input channels, a 1-row map
            return cast(Tensor, self.layers(x.unsqueeze(2)))  # (B, 8w, 1, T)
        x = self.stem(x.unsqueeze(1))  # (B, w, n_mels/4, T/4)
        if self._channels_last():
            # the 1-channel stem leaves the format ambiguous: make the residual stages NHWC
            x = x.contiguous(memory_format=torch.channels_last)
        return cast(Tensor, self.layers(x))  # (B, 8w, n_mels/32 (/4 with freq_stride 1), T/32)

    def frames(self, x: Tensor) -> Tensor:
        """(B, n_mels, T) dB -> (B, D, T') per-time-step backbone features.

        The last-stage map with frequency reduced the way the encoder's own pooling reduces
        it ('freq': ``freq_bands`` bands, else the mean over frequency), time kept: averaging
        these over time gives :meth:`backbone` for the 'avg' and 'freq' poolings, and any
        other temporal pooling (max, GWRP, ...) can be applied instead.
        """
        fmap = self.feature_map(x)  # (B, C, F', T')
        if self.cfg.pool == "freq":
            banded = F.adaptive_avg_pool2d(fmap, (self.cfg.freq_bands, fmap.shape[-1]))
            return banded.flatten(1, 2)  # (B, C * bands, T'), channel-major as pool_features
        return fmap.mean(dim=2)  # (B, C, T')

    def _channels_last(self) -> bool:
        """Whether ``.to(memory_format=channels_last)`` was applied (a w x w conv tells)."""
        if self.cfg.arch == "tdnn":
            return False
        block = cast(BasicBlock, cast(nn.Sequential, self.layers[1])[0])
        return block.conv2.weight.is_contiguous(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """(B, n_mels, T) dB -> (B, embedding_dim) projection for the contrastive loss."""
        return self.head(self.backbone(x))

    def embed(self, x: Tensor) -> Tensor:
        """(B, n_mels, T) dB -> (B, d): the projection or the backbone vector per config."""
        if self.cfg.embed_from == "backbone":
            return self.backbone(x)
        return self.forward(x)


def resnet_layers(cfg: EncoderConfig) -> tuple[nn.Module, nn.Sequential]:
    """(stem, four residual stages) of a ResNet-18 of ``cfg.width`` channels at the stem."""
    base = cfg.width
    stem = nn.Sequential(
        nn.Conv2d(1, base, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(base),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    widths = (base, 2 * base, 4 * base, 8 * base)
    blocks, layers, in_ch = (2, 2, 2, 2), [], base
    for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
        stride = (1, 1) if i == 0 else (cfg.freq_stride, 2)  # (frequency, time)
        stage = [BasicBlock(in_ch, width, stride)] + [
            BasicBlock(width, width) for _ in range(n - 1)
        ]
        layers.append(nn.Sequential(*stage))
        in_ch = width
    return stem, nn.Sequential(*layers)


TDNN_KERNELS = ((5, 1), (3, 2), (3, 3), (1, 1))
"""(kernel, dilation) over time of each TDNN layer (x-vector style frame layers)."""


def tdnn_layers(n_mels: int, channels: int) -> nn.Sequential:
    """1-D convolutions over time with the mel bands as input channels (as (B, C, 1, T) maps).

    Frequency is never downsampled: the first layer sees every band at full resolution, so
    the pooled vector can carry a clip-mean spectrum plus local temporal patterns.
    """
    layers: list[nn.Module] = []
    in_ch = n_mels
    for kernel, dilation in TDNN_KERNELS:
        pad = dilation * (kernel - 1) // 2
        layers += [
            nn.Conv2d(in_ch, channels, (1, kernel), padding=(0, pad), dilation=(1, dilation)),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        in_ch = channels
    return nn.Sequential(*layers)


def plain_batchnorm(module: nn.Module) -> None:
    """Undo ``convert_sync_batchnorm`` in place (same parameters and buffers)."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            plain_batchnorm(child)


def pool_features(x: Tensor, pool: str, freq_bands: int = 4) -> Tensor:
    """(B, C, F, T) last-stage map -> (B, C * kept) vector, per ``encoder.pool``.

    'avg' averages time and frequency (the paper); 'freq' averages time only and keeps
    ``freq_bands`` frequency bands, so where in the spectrum energy sits survives, as it does in
    a clip-mean spectrum; 'meanstd' keeps the mean and standard deviation over time, each
    averaged over frequency, so how much a clip varies in time survives.
    """
    if pool == "freq":
        return torch.flatten(F.adaptive_avg_pool2d(x, (freq_bands, 1)), 1)  # (B, C*bands)
    if pool == "meanstd":
        mean = x.mean(dim=3)  # (B, C, F)
        std = (x.var(dim=3, unbiased=False) + 1e-5).sqrt()  # (B, C, F); eps: finite grads
        return torch.cat([mean.mean(dim=2), std.mean(dim=2)], dim=1)  # (B, 2C)
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, C)


def save_encoder(
    encoder: Encoder, path: str | Path, config: Config, extra: dict[str, Any] | None = None
) -> Path:
    """Write weights + flat config + ``extra`` atomically; loadable with ``weights_only=True``.

    ``extra`` (code version, data fingerprint, ...) must hold only str/int/float/bool/None,
    lists, dicts and tensors, so the file never needs pickle's arbitrary code execution.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": _FORMAT,
        "n_mels": int(encoder.n_mels),
        "config": config.to_json(),
        "encoder": json.dumps(dataclasses.asdict(encoder.cfg), sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "classes": list(encoder.classes),
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_encoder(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Encoder, Config, dict[str, Any]]:
    """Inverse of :func:`save_encoder`: (encoder in eval mode, its Config, extra)."""
    path = Path(path)
    if not path.is_file():
        raise AsdError(f"no encoder file at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one
        raise AsdError(f"cannot read encoder file {path}: {type(err).__name__}") from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise AsdError(f"{path} is not an asd encoder file (format {_FORMAT})")
    try:
        config = Config.from_json(state["config"])
        enc_cfg = EncoderConfig(**json.loads(state["encoder"]))
        encoder = Encoder(enc_cfg, int(state["n_mels"]))
        encoder.load_state_dict(state["state_dict"])
        encoder.classes = tuple(str(c) for c in state.get("classes", []))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise AsdError(
            f"encoder file {path} is incomplete or inconsistent: {one_line(err)}"
        ) from err
    encoder.to(map_location).eval()
    return encoder, config, dict(state.get("extra", {}))
