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

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            # 1x1 projection so the shortcut matches the new shape
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
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
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))
        self.stem = nn.Sequential(
            nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        widths, blocks, layers, in_ch = (64, 128, 256, 512), (2, 2, 2, 2), [], 64
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(in_ch, width, stride)] + [
                BasicBlock(width, width) for _ in range(n - 1)
            ]
            layers.append(nn.Sequential(*stage))
            in_ch = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(BACKBONE_DIM, cfg.head_hidden_dim),
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
    def embedding_dim(self) -> int:
        """Size of the vectors ``embed`` returns."""
        return self.cfg.embedding_dim if self.cfg.embed_from == "projection" else BACKBONE_DIM

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
        """(B, n_mels, T) dB -> (B, 512) pooled ResNet features."""
        x = (x - self.mel_mean[:, None]) / self.mel_std[:, None]
        x = self.stem(x.unsqueeze(1))  # (B, 64, n_mels/4, T/4)
        if self._channels_last():
            # the 1-channel stem leaves the format ambiguous: make the residual stages NHWC
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.layers(x)  # (B, 512, n_mels/32, T/32)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, 512)

    def _channels_last(self) -> bool:
        """Whether ``.to(memory_format=channels_last)`` was applied (a 64x64 conv tells)."""
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
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise AsdError(
            f"encoder file {path} is incomplete or inconsistent: {one_line(err)}"
        ) from err
    encoder.to(map_location).eval()
    return encoder, config, dict(state.get("extra", {}))
