"""The DCASE 2023 Task 2 tree: index every clip, read waveforms.

(Skeleton: read_wav and fingerprint keep these signatures; the indexer is being written.)
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from asd.errors import AsdError

log = logging.getLogger(__name__)


def read_wav(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform at ``sample_rate``; AsdError naming the file when unreadable."""
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for broken files
        raise AsdError(f"cannot read {path}: {exc}") from None
    if wave.shape[0] == 0:
        raise AsdError(f"empty audio file {path}")
    mono = wave.mean(axis=1)
    if rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        mono = AF.resample(torch.from_numpy(mono), rate, sample_rate).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def fingerprint(index: pd.DataFrame) -> str:
    """A hash of every clip's path and size: names the data set a result was computed on."""
    h = hashlib.sha256()
    for path in index["path"]:
        p = Path(path)
        h.update(f"{p.parent.parent.name}/{p.parent.name}/{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]
