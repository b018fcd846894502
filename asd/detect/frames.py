"""Frames -> pooled vectors: what each detector member's scorer fits, computed once.

A member's frames are the log-mel itself (untrained: ``logmel``) or the trained encoder's
per-time-step features (``encoder``). Both become one vector per clip through a temporal
pooling (:mod:`asd.detect.pooling`); every pooling a detector needs is computed in one pass
over the clips, grouped by length so no padding ever reaches a pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from asd.detect.pooling import parse_pooling, per_machine
from asd.errors import AsdError
from asd.model.embed import autocast_for, embed_clips, equal_length_batches
from asd.model.train import resolve_device
from asd.progress import progress as progress_bar

if TYPE_CHECKING:
    from asd.features import FeatureSet
    from asd.model.encoder import Encoder


def logmel_pooled(
    features: FeatureSet, pools: Sequence[str], batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Per pooling spec, (N, d) float32 pooled log-mel (dB) of every clip of ``features``.

    Clips go in batches of one length (and one machine type when a spec depends on it).
    """
    specs = list(dict.fromkeys(pools))
    n_mels = features.config.n_mels
    width = {p: parse_pooling(p).width(n_mels) for p in specs}
    out = {p: np.empty((len(features), width[p]), np.float32) for p in specs}
    frames = np.asarray(features.index["frames"], dtype=np.int64)
    machines = features.index["machine"].astype(str).to_numpy()
    by_machine = any(per_machine(p) for p in specs)
    keys = zip(frames.tolist(), machines if by_machine else [""] * len(frames), strict=True)
    groups = sorted(set(keys))
    for length, machine in groups:
        rows = (frames == length) & ((machines == machine) if by_machine else True)
        group = np.flatnonzero(rows)
        poolings = {p: parse_pooling(p, machine or None) for p in specs}
        for i in range(0, len(group), batch_size):
            positions = group[i : i + batch_size]
            mel, _ = features.padded(positions)  # (b, n_mels, length), all equal length
            for spec, pooling in poolings.items():
                out[spec][positions] = pooling(mel)
    return out


def pooled_vectors(
    needed: Sequence[tuple[str, str]],
    features: FeatureSet,
    encoder: Encoder | None,
    device: str = "auto",
    progress: bool = False,
) -> dict[tuple[str, str], np.ndarray]:
    """(frames, pooling) -> (N, d) vectors for every pair in ``needed``, one pass per frames."""
    wanted = list(dict.fromkeys(needed))
    out: dict[tuple[str, str], np.ndarray] = {}
    logmel = [p for f, p in wanted if f == "logmel"]
    if logmel:
        out.update({("logmel", p): v for p, v in logmel_pooled(features, logmel).items()})
    learned = [p for f, p in wanted if f == "encoder"]
    if learned:
        if encoder is None:
            raise AsdError("the detector has an encoder member but no encoder was given")
        pooled = encoder_pooled(encoder, features, learned, device=device, progress=progress)
        out.update({("encoder", p): v for p, v in pooled.items()})
    return out


def encoder_pooled(
    encoder: Encoder,
    features: FeatureSet,
    pools: Sequence[str],
    device: str | torch.device = "auto",
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per pooling spec, (N, d) vectors of every clip: the encoder's frames pooled over time.

    ``'own'`` is the encoder's own embedding (:func:`embed_clips`, the paper's detector); any
    other spec (:mod:`asd.detect.pooling`) pools :meth:`Encoder.frames`. The network runs
    once per batch for all of them.
    """
    if any(per_machine(p) for p in pools):
        raise AsdError("the 'twfr' pooling is for log-mel frames (its decays are per machine)")
    poolings = {p: parse_pooling(p) for p in pools if p != "own"}
    out: dict[str, np.ndarray] = {}
    if "own" in pools:
        out["own"] = embed_clips(encoder, features, device, batch_size, progress)
    if not poolings:
        return out
    device = resolve_device(device)
    frames = np.asarray(features.index["frames"], dtype=np.int64)
    rows: dict[str, list[np.ndarray]] = {p: [] for p in poolings}
    order: list[np.ndarray] = []
    was_training = encoder.training
    encoder.to(device).eval()
    try:
        with torch.no_grad():
            batches = equal_length_batches(frames, batch_size)
            for positions in progress_bar(batches, len(batches), "frames", enabled=progress):
                mel, _ = features.padded(positions)  # (b, n_mels, frames), all equal length
                x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).to(device)
                with autocast_for(device):
                    per_step = encoder.frames(x).float().cpu().numpy()  # (b, D, T')
                for spec, pooling in poolings.items():
                    rows[spec].append(pooling(per_step).astype(np.float32))
                order.append(positions)
    finally:
        encoder.train(was_training)
    where = np.concatenate(order)
    for spec, parts in rows.items():
        stacked = np.concatenate(parts)
        out[spec] = np.empty_like(stacked)
        out[spec][where] = stacked
    return out
