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

from asd.detect.pooling import parse_pooling, per_machine
from asd.errors import AsdError

if TYPE_CHECKING:
    from asd.encoder import Encoder
    from asd.features import FeatureSet


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
    from asd.embed import embed_pooled  # the encoder side needs torch's model code

    wanted = list(dict.fromkeys(needed))
    out: dict[tuple[str, str], np.ndarray] = {}
    logmel = [p for f, p in wanted if f == "logmel"]
    if logmel:
        out.update({("logmel", p): v for p, v in logmel_pooled(features, logmel).items()})
    learned = [p for f, p in wanted if f == "encoder"]
    if learned:
        if encoder is None:
            raise AsdError("the detector has an encoder member but no encoder was given")
        pooled = embed_pooled(encoder, features, learned, device=device, progress=progress)
        out.update({("encoder", p): v for p, v in pooled.items()})
    return out
