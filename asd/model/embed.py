"""Embeddings of whole clips: what the Mahalanobis scorer fits and scores.

Clips keep their full length (no crop, no padding): clips with the same frame count are
batched together, so the global pooling never averages over padded frames.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from asd.features import FeatureSet
from asd.model.encoder import Encoder
from asd.model.train import resolve_device
from asd.progress import progress as progress_bar


def embed_clips(
    encoder: Encoder,
    features: FeatureSet,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """(N, d) float32 embeddings of every clip of ``features``, in its order.

    The encoder runs in eval mode without gradients (bf16 autocast on CUDA) and is moved to
    ``device``; its train/eval mode is restored afterwards so a per-epoch report can call this.
    """
    device = resolve_device(device)
    frames = np.asarray(features.index["frames"], dtype=np.int64)
    out = np.zeros((len(frames), encoder.embedding_dim), dtype=np.float32)
    # equal-length groups, cut into batches: no padding ever reaches the pooling
    batches = equal_length_batches(frames, batch_size)
    was_training = encoder.training
    encoder.to(device).eval()
    try:
        with torch.no_grad():
            for positions in progress_bar(batches, len(batches), "embed", enabled=progress):
                mel, _ = features.padded(positions)  # (b, n_mels, frames), all equal length
                x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).to(device)
                with autocast_for(device):
                    z = encoder.embed(x)  # (b, d)
                out[positions] = z.float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return out


def equal_length_batches(frames: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions grouped by frame count, cut into batches: no padding reaches a pooling."""
    return [
        group[i : i + batch_size]
        for length in np.unique(frames)
        for group in [np.flatnonzero(frames == length)]
        for i in range(0, len(group), batch_size)
    ]


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
