"""Training clips: the typed record train() takes, and on the device checked, tiled, cropped.

Why it exists: the training loop keeps every clip resident on its device and cuts batches
with index arithmetic (no per-clip Python loop per step); these are the pieces that make
that possible, apart from the loop itself (:mod:`asd.model.train`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from asd.config import Config
from asd.errors import AsdError
from asd.model.margin import ClassLabels

Array = np.ndarray | torch.Tensor
"""What the clips and stats arrive as: numpy (a FeatureSet) or tensors (tests, benchmarks)."""


@dataclass(frozen=True)
class TrainClips:
    """What :func:`asd.model.train.train` learns from: the normal training clips, padded.

    One record instead of five loose arguments, so a caller cannot swap ``mean`` and ``std``
    or hand over lengths of other clips; :func:`resident_clips` checks the shapes.
    """

    clips: Array
    """(N, n_mels, L) log-mel dB, padded past each clip's valid length."""
    lengths: Array
    """(N,) valid frames of each clip."""
    mean: Array
    """(n_mels,) per-band mean the encoder normalises by."""
    std: Array
    """(n_mels,) per-band standard deviation the encoder normalises by."""
    labels: ClassLabels | None = None
    """Name labels of the clips for the margin head (``loss.aux_weight > 0``), else None."""


def tile_short_clips(clips: torch.Tensor, lengths: torch.Tensor, crop_frames: int) -> torch.Tensor:
    """(N, n_mels, L) -> (N, n_mels, max(L, crop)): each clip repeated past its valid length.

    Frame ``j`` of clip ``n`` becomes frame ``j % lengths[n]``, so every crop of
    ``max(length, crop_frames)`` frames from the start is real (tiled) audio.
    """
    width = max(clips.shape[-1], crop_frames)
    frame = torch.arange(width, device=clips.device)[None, :] % lengths[:, None]  # (N, W)
    return torch.gather(clips, 2, frame[:, None, :].expand(-1, clips.shape[1], -1))


def random_crops(
    clips: torch.Tensor,
    valid: torch.Tensor,
    positions: torch.Tensor,
    crop_frames: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """A random window of ``crop_frames`` inside each chosen clip's valid frames.

    clips (N, n_mels, W), valid (N,) frames >= crop_frames, positions (B,) -> (B, n_mels, crop).
    """
    room = valid[positions] - crop_frames + 1  # (B,) possible start frames
    u = torch.rand(positions.shape[0], generator=generator, device=clips.device)
    start = (u * room).long().clamp_max(room - 1)  # (B,)
    frame = start[:, None] + torch.arange(crop_frames, device=clips.device)  # (B, crop)
    chosen = clips[positions]  # (B, n_mels, W)
    return torch.gather(chosen, 2, frame[:, None, :].expand(-1, chosen.shape[1], -1))


def resident_clips(
    data: TrainClips, cfg: Config, device: torch.device, world: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked clips (N, n_mels, L) as float on ``device`` (short ones tiled), valid frames (N,).

    AsdError naming the setting when they cannot train.
    ``world`` data-parallel workers each need at least one clip of every batch.
    """
    t, clips, lengths = cfg.train, data.clips, data.lengths
    clips_t = clips if isinstance(clips, torch.Tensor) else torch.as_tensor(np.asarray(clips))
    lengths_t = torch.as_tensor(np.asarray(lengths), dtype=torch.long).reshape(-1)
    if clips_t.dim() != 3 or clips_t.shape[1] != cfg.features.n_mels:
        raise AsdError(
            f"training clips have shape {tuple(clips_t.shape)}, expected "
            f"(N, features.n_mels={cfg.features.n_mels}, frames)"
        )
    n_clips = clips_t.shape[0]
    if n_clips < 2 or lengths_t.shape[0] != n_clips:
        raise AsdError(f"training needs at least 2 clips with one length each, got {n_clips}")
    if int(lengths_t.min()) < 1 or int(lengths_t.max()) > clips_t.shape[-1]:
        raise AsdError("training clip lengths must be between 1 and the padded frame count")
    if not clips_t.is_floating_point():
        clips_t = clips_t.float()
    clips_t, lengths_t = clips_t.to(device), lengths_t.to(device)
    if int(lengths_t.min()) < t.crop_frames:
        clips_t = tile_short_clips(clips_t, lengths_t, t.crop_frames)
    valid = lengths_t.clamp_min(t.crop_frames)  # (N,) frames a crop may come from
    if min(t.batch_size, n_clips) < world:
        raise AsdError(
            f"train.batch_size={t.batch_size} with {n_clips} clips cannot feed {world} "
            "data-parallel workers: every worker needs at least one clip per step"
        )
    return clips_t, valid
