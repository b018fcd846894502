"""A table of clips (machine, section, audio) -> anomaly scores, with errors naming the row.

``audio`` is a path the scoring process can read, or the bytes of a wav file in base64 (what
an HTTP client sends). Bytes go through the same reader as files (:func:`asd.data.index.read_wav`),
so a clip posted to a server scores exactly as `asd score` scores the file. A clip at another
sample rate is resampled to the detector's, and the row's ``note`` says so.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from asd.data.index import read_wav
from asd.detect.artifact import OUTPUT_COLUMNS, Detector
from asd.errors import AsdError
from asd.features import log_mel

INPUT_COLUMNS = ("machine", "section", "audio")
RESULT_COLUMNS = ("machine", "section", *OUTPUT_COLUMNS, "note")
"""What :func:`score_table` returns per row."""


def section_meta(table: pd.DataFrame) -> pd.DataFrame:
    """``machine`` (str) and ``section`` (int) of every row; AsdError naming a bad row."""
    missing = [c for c in INPUT_COLUMNS if c not in table.columns]
    if missing:
        raise AsdError(
            f"input lacks column(s) {', '.join(missing)} (needs {', '.join(INPUT_COLUMNS)})"
        )
    sections = []
    for i, value in enumerate(table["section"]):
        try:
            sections.append(int(value))
        except (TypeError, ValueError):
            raise AsdError(f"row {i}: section must be an integer, got {value!r}") from None
    return pd.DataFrame({"machine": table["machine"].astype(str).to_numpy(), "section": sections})


def read_audio(value: object, sample_rate: int, channel: int, row: int) -> tuple[np.ndarray, str]:
    """(mono float32 waveform at ``sample_rate``, note) of a path or base64 wav bytes."""
    if isinstance(value, bytes | bytearray):
        return _read_bytes(bytes(value), sample_rate, channel, row)
    if not isinstance(value, str) or not value:
        raise AsdError(f"row {row}: audio must be a file path or base64 wav bytes")
    if _is_file(value):
        return read_wav(value, sample_rate, channel), _rate_note(value, sample_rate)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AsdError(
            f"row {row}: audio is neither a file this server can read nor base64 wav bytes"
        ) from None
    return _read_bytes(data, sample_rate, channel, row)


def _is_file(value: str) -> bool:
    try:
        return len(value) < 4096 and Path(value).is_file()
    except OSError:  # a long base64 string is no file name
        return False


def _read_bytes(data: bytes, sample_rate: int, channel: int, row: int) -> tuple[np.ndarray, str]:
    """Bytes through the file reader, so they are read exactly as a file of them would be."""
    with tempfile.TemporaryDirectory(prefix="asd-clip-") as tmp:
        path = Path(tmp) / f"row{row}.wav"
        path.write_bytes(data)
        try:
            return read_wav(path, sample_rate, channel), _rate_note(path, sample_rate)
        except AsdError as err:
            message = str(err).replace(str(path), "the clip")
            prefix = "cannot read the clip: "
            if message.startswith(prefix):
                message = f"not readable audio ({message.removeprefix(prefix)})"
            raise AsdError(f"row {row}: {message}") from None


def _rate_note(path: str | Path, sample_rate: int) -> str:
    rate = sf.info(str(path)).samplerate
    return f"resampled {rate} Hz to {sample_rate} Hz" if rate != sample_rate else ""


def score_table(detector: Detector, table: pd.DataFrame, device: str = "cpu") -> pd.DataFrame:
    """Per row: machine, section, anomaly_score, decision, threshold, normal_z, note."""
    meta = section_meta(table)
    detector.check_sections(meta)  # before any audio is decoded: the cheap error first
    cfg = detector.config.features
    mels, notes = [], []
    for i, value in enumerate(table["audio"]):
        wave, note = read_audio(value, cfg.sample_rate, cfg.channel, i)
        try:
            mels.append(log_mel(torch.from_numpy(wave), cfg).numpy())  # (n_mels, frames)
        except AsdError as err:
            raise AsdError(f"row {i}: {err}") from None
        notes.append(note)
    if not mels:
        raise AsdError("no clips to score")
    scored = detector.score(mels, meta, device)
    out = scored[["machine", "section", *OUTPUT_COLUMNS]].copy()
    out["note"] = notes
    return out


def batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    """``items`` in consecutive batches of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def score_files(
    detector: Detector,
    paths: Sequence[Path],
    machine: str,
    section: int,
    batch_size: int = 256,
    device: str = "cpu",
) -> Iterator[pd.DataFrame]:
    """Scores of wav files of one machine and section, one batch at a time (bounded memory)."""
    for batch in batches(paths, batch_size):
        table = pd.DataFrame(
            {"machine": machine, "section": section, "audio": [str(p) for p in batch]}
        )
        out = score_table(detector, table, device)
        out.insert(0, "path", [str(p) for p in batch])
        yield out
