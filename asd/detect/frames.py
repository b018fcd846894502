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

from asd.detect.pooling import parse_pooling
from asd.errors import AsdError

if TYPE_CHECKING:
    from asd.encoder import Encoder
    from asd.features import FeatureSet


def logmel_pooled(
    features: FeatureSet, pools: Sequence[str], batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Per pooling spec, (N, d) float32 pooled log-mel (dB) of every clip of ``features``."""
    poolings = {p: parse_pooling(p) for p in dict.fromkeys(pools)}
    n_mels = features.config.n_mels
    out = {p: np.empty((len(features), q.width(n_mels)), np.float32) for p, q in poolings.items()}
    frames = np.asarray(features.index["frames"], dtype=np.int64)
    for length in np.unique(frames):
        group = np.flatnonzero(frames == length)
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
