"""Waveform -> log-mel (dB of power), and the on-disk cache every trial of a sweep reads.

Features are computed once per (feature config, data set): the cache folder is named by a
hash of both (the data by its clips' bytes, see asd.data.fingerprint), written to a temporary
folder and renamed into place (asd.staging), so a killed extraction never leaves a half
cache and two extractors of the same key cannot corrupt each other.
Clips may have any length: the store is ragged (one ``(total_frames, n_mels)`` array plus an
``offset``/``frames`` per clip), and ``padded`` builds batches for the encoder.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from asd.config import FeatureConfig
from asd.data import index as data
from asd.data.fingerprint import STORE_NAME
from asd.errors import AsdError
from asd.progress import progress as progress_bar
from asd.staging import tmp_folder

log = logging.getLogger(__name__)

CACHE_VERSION = 2
"""Bumped when the cache layout or the log-mel computation changes (old caches get a new key)."""

_STD_FLOOR = 1e-3
"""Smallest normalisation std in dB, so a constant (e.g. silent) mel band never divides by 0."""

_CHUNK_SAMPLES = 64 * 160_000
"""Samples read before a batch goes through the STFT (64 ten-second clips, ~40 MB)."""


# --------------------------------------------------------------------------- log-mel


@functools.lru_cache(maxsize=16)
def window_and_filters(cfg: FeatureConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """The Hann window (n_fft,) and mel filterbank (n_freqs, n_mels) of ``cfg`` on ``device``.

    The same ones ``torchaudio.transforms.MelSpectrogram`` builds (periodic Hann, HTK mel scale,
    no filter normalisation); ``augment`` reuses them for its noise model.
    """
    window = torch.hann_window(cfg.n_fft, device=device)
    fbank = AF.melscale_fbanks(
        cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate, None, "htk"
    ).to(device)
    return window, fbank


def log_mel(waveform: Tensor, cfg: FeatureConfig) -> Tensor:
    """Log-mel in dB of power: ``(..., samples) -> (..., n_mels, frames)``.

    Equal to ``10*log10(MelSpectrogram(...)(waveform))`` with torchaudio's settings (centred,
    reflect padding, power 2), floored at ``cfg.top_db_floor`` so silence has a finite value.
    """
    samples = waveform.shape[-1]
    if samples <= cfg.n_fft // 2:
        raise AsdError(
            f"waveform of {samples} samples is too short for features.n_fft={cfg.n_fft} "
            f"(needs more than {cfg.n_fft // 2})"
        )
    window, fbank = window_and_filters(cfg, waveform.device)
    lead = waveform.shape[:-1]
    flat = waveform.reshape(-1, samples).to(torch.float32)  # (B, samples)
    spec = torch.stft(
        flat,
        cfg.n_fft,
        cfg.hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )  # (B, n_freqs, frames)
    power = spec.real.square() + spec.imag.square()
    mel = torch.matmul(fbank.T, power)  # (B, n_mels, frames)
    db = 10.0 * torch.log10(mel.clamp_min(10.0 ** (cfg.top_db_floor / 10.0)))
    return db.reshape(*lead, cfg.n_mels, db.shape[-1])


class LogMel(nn.Module):
    """``log_mel`` as a module: ``(..., samples) -> (..., n_mels, frames)`` dB."""

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, waveform: Tensor) -> Tensor:
        """Log-mel of ``waveform`` (see :func:`log_mel`)."""
        return log_mel(waveform, self.cfg)


# --------------------------------------------------------------------------- ragged store


def _stats_rows(index: pd.DataFrame) -> np.ndarray:
    """Rows the normalisation stats come from: the normal train clips, else every clip.

    Unlike :func:`asd.data.index.normal_train_mask`, a set without normal train clips (test clips
    only, or an index without split/label) falls back to all its clips: it is normalised by
    its own clips rather than not at all.
    """
    if {"split", "label"} <= set(index.columns):
        mask = data.normal_train_mask(index)
        if mask.any():
            return mask
    return np.ones(len(index), dtype=bool)


class _Moments:
    """Running per-mel-band sum and sum of squares (float64), for mean/std without a copy."""

    def __init__(self, n_mels: int) -> None:
        self.n = 0
        self.s1 = np.zeros(n_mels)
        self.s2 = np.zeros(n_mels)

    def add(self, mel: np.ndarray) -> None:
        """Add frames of one clip, ``(frames, n_mels)``."""
        m = mel.astype(np.float64)
        self.n += m.shape[0]
        self.s1 += m.sum(axis=0)
        self.s2 += np.square(m).sum(axis=0)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` as float32 ``(n_mels,)``; std floored at ``_STD_FLOOR``."""
        n = max(self.n, 1)
        mean = self.s1 / n
        var = np.maximum(self.s2 / n - mean**2, 0.0)
        std = np.maximum(np.sqrt(var), _STD_FLOOR)
        return mean.astype(np.float32), std.astype(np.float32)


class FeatureSet:
    """Log-mels of every clip of an index, stored ragged.

    ``index`` is the data index plus ``offset`` and ``frames`` columns: clip ``i`` is
    ``mel[offset_i : offset_i + frames_i]`` of the ``(total_frames, n_mels)`` float16 array
    (memory-mapped when loaded from disk). ``mean``/``std`` ``(n_mels,)`` are the dB statistics
    of the normal train clips (every clip when there are none); a subset keeps its parent's.
    """

    def __init__(
        self,
        mel: np.ndarray,
        index: pd.DataFrame,
        config: FeatureConfig,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        path: Path | None = None,
    ) -> None:
        if mel.ndim != 2 or mel.shape[1] != config.n_mels:
            raise AsdError(f"features need shape (frames, {config.n_mels}), got {mel.shape}")
        missing = {"offset", "frames"} - set(index.columns)
        if missing:
            raise AsdError(f"feature index lacks columns {sorted(missing)}")
        self.mel = mel
        self.index = index.reset_index(drop=True)
        self.config = config
        if mean is None or std is None:
            mean, std = self._stats()
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.path = path
        """The cache folder this set was loaded from (None in memory): what trials reopen."""

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        moments = _Moments(self.config.n_mels)
        for i in np.flatnonzero(_stats_rows(self.index)):
            o, f = int(self.index.at[i, "offset"]), int(self.index.at[i, "frames"])
            moments.add(self.mel[o : o + f])
        return moments.result()

    @classmethod
    def from_arrays(
        cls, mels: Sequence[np.ndarray], index: pd.DataFrame, cfg: FeatureConfig
    ) -> FeatureSet:
        """An in-memory set from one ``(n_mels, frames)`` array per row of ``index``."""
        if len(mels) != len(index):
            raise AsdError(f"{len(mels)} log-mels for an index of {len(index)} clips")
        frames = np.array([m.shape[-1] for m in mels], dtype=np.int64)
        for m in mels:
            if m.ndim != 2 or m.shape[0] != cfg.n_mels:
                raise AsdError(f"each log-mel needs shape ({cfg.n_mels}, frames), got {m.shape}")
        offsets = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
        mel = (
            np.concatenate([np.asarray(m).T for m in mels]).astype(np.float16)
            if mels
            else np.zeros((0, cfg.n_mels), dtype=np.float16)
        )  # (total_frames, n_mels)
        full = index.reset_index(drop=True).copy()
        full["offset"] = offsets
        full["frames"] = frames
        return cls(mel, full, cfg)

    def __len__(self) -> int:
        return len(self.index)

    def clip(self, i: int) -> np.ndarray:
        """Log-mel of the clip at position ``i``: ``(n_mels, frames)`` float32."""
        o, f = int(self.index["offset"].iat[i]), int(self.index["frames"].iat[i])
        return np.asarray(self.mel[o : o + f], dtype=np.float32).T

    def subset(self, mask_or_positions: np.ndarray | Sequence[int] | Sequence[bool]) -> FeatureSet:
        """The clips selected by a boolean mask or positions; storage and stats are shared."""
        sel = np.asarray(mask_or_positions)
        if sel.dtype == bool:
            if sel.shape != (len(self),):
                raise AsdError(f"subset mask has shape {sel.shape}, expected ({len(self)},)")
            sel = np.flatnonzero(sel)
        return FeatureSet(self.mel, self.index.iloc[sel], self.config, self.mean, self.std)

    def padded(
        self, positions: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A batch ``(N, n_mels, max_frames)`` float32 and ``lengths (N,)`` int64.

        Frames past a clip's length hold ``top_db_floor`` (silence); use ``lengths`` to
        crop or tile. ``positions=None`` takes every clip.
        """
        pos = np.arange(len(self)) if positions is None else np.asarray(positions, dtype=np.int64)
        lengths = self.index["frames"].to_numpy()[pos].astype(np.int64)
        width = int(lengths.max()) if len(pos) else 0
        out = np.full((len(pos), self.config.n_mels, width), self.config.top_db_floor, np.float32)
        for row, p in enumerate(pos):
            out[row, :, : lengths[row]] = self.clip(int(p))
        return out, lengths


# --------------------------------------------------------------------------- cache


def cache_key(index: pd.DataFrame, cfg: FeatureConfig, hash_store: Path | None = None) -> str:
    """Name of the cache of ``index`` under ``cfg``: hash of config, clip bytes and labels."""
    return _key(cfg, data.fingerprint(index, hash_store), index)


_TRUTH_COLUMNS = ("domain", "label")
"""Index columns that ground truth sets for eval clips: not in a clip's name or bytes."""


def _key(cfg: FeatureConfig, fingerprint: str, index: pd.DataFrame) -> str:
    # The cache folder carries its index (trials reopen it by path), so the labels are part
    # of its name: ground truth given or corrected later must never meet an old cache.
    truth = hashlib.sha256()
    for column in _TRUTH_COLUMNS:
        if column in index.columns:
            truth.update(f"{column}:{','.join(map(str, index[column]))}\n".encode())
    text = f"v{CACHE_VERSION}:{cfg.key()}:{fingerprint}:{truth.hexdigest()[:16]}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_CACHE_FILES = ("mel.npy", "index.json", "meta.json")


def load_features(path: str | Path) -> FeatureSet:
    """A cache folder written by :func:`extract_features`, memory-mapped (nothing is read yet).

    The index is JSON, never a pickle: a shared cache folder must not be able to run code.
    Every file is checked against ``meta.json``; AsdError names the folder and what is wrong.
    """
    path = Path(path)
    name = "meta.json"
    try:
        meta = json.loads((path / name).read_text())
        cfg = FeatureConfig(**meta["config"])
        n_clips, total = int(meta["n_clips"]), int(meta["total_frames"])
        mean, std = np.array(meta["mean"], np.float32), np.array(meta["std"], np.float32)
        name = "index.json"
        index = pd.DataFrame(json.loads((path / name).read_text()))
        name = "mel.npy"
        mel = np.load(path / name, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        # EOFError: numpy's answer to a zero-byte .npy (a full disk, a copy cut short).
        raise AsdError(
            f"feature cache {path} is corrupt: {name}: {type(exc).__name__}: {exc}"
        ) from None
    if len(index) != n_clips or mel.shape != (total, cfg.n_mels):
        raise AsdError(
            f"feature cache {path} is corrupt: {len(index)} clips and mel {mel.shape}, "
            f"meta.json says {n_clips} clips and ({total}, {cfg.n_mels})"
        )
    if n_clips and int(index["offset"].iloc[-1] + index["frames"].iloc[-1]) != total:
        raise AsdError(f"feature cache {path} is corrupt: offsets do not add up to {total}")
    return FeatureSet(mel, index, cfg, mean, std, path=path)


def _is_complete(path: Path) -> bool:
    """A cache folder is complete when its three files exist (it only ever appears by rename)."""
    return all((path / name).is_file() for name in _CACHE_FILES)


def _load_or_discard(target: Path, index: pd.DataFrame) -> FeatureSet | None:
    """The cache at ``target`` with this ``index``'s paths, or None (debris is removed)."""
    if _is_complete(target):
        try:
            cached = load_features(target)
        except AsdError as exc:
            log.warning("%s: rebuilding it", exc)
            shutil.rmtree(target, ignore_errors=True)
            return None
        else:
            log.info("feature cache hit %s", target)
            # Same bytes may sit at another path: report where the clips are now.
            cached.index["path"] = index["path"].to_numpy()
            return cached
    if target.exists():
        # Caches only appear by rename once complete, so this is debris (e.g. copied by hand).
        log.warning("removing incomplete feature cache %s", target)
        shutil.rmtree(target, ignore_errors=True)
    return None


def _npy_header(shape: tuple[int, int]) -> bytes:
    """The ``.npy`` header of a C-ordered float16 array of ``shape``."""
    buf = io.BytesIO()
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
        "fortran_order": False,
        "shape": shape,
    }
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def extract_features(
    index: pd.DataFrame,
    cfg: FeatureConfig,
    cache_dir: str | Path,
    progress: bool = True,
) -> FeatureSet:
    """Log-mels of every clip of ``index``, from ``<cache_dir>/<key>/`` when already there.

    Otherwise every clip is read at ``cfg.sample_rate``, clips of equal length go through the
    STFT together, and the result is written to a temporary folder renamed into place (if
    another process finished the same key first, its cache wins and ours is discarded).
    """
    cache_dir = Path(cache_dir)
    index = index.reset_index(drop=True)
    fingerprint = data.fingerprint(index, cache_dir / STORE_NAME)
    key = _key(cfg, fingerprint, index)
    target = cache_dir / key
    cached = _load_or_discard(target, index)
    if cached is not None:
        return cached
    tmp = tmp_folder(cache_dir, key)
    try:
        _write_cache(index, cfg, tmp, key, fingerprint, progress)
        try:
            os.rename(tmp, target)
        except OSError:
            if _load_or_discard(target, index) is None:
                raise
            log.info("feature cache %s appeared meanwhile; discarding ours", target)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_features(target)


def _write_cache(
    index: pd.DataFrame,
    cfg: FeatureConfig,
    folder: Path,
    key: str,
    fingerprint: str,
    progress: bool,
) -> None:
    """Compute every clip's log-mel into ``folder`` (mel.npy, index.json, meta.json)."""
    index = index.reset_index(drop=True)
    stats_rows = _stats_rows(index)
    moments = _Moments(cfg.n_mels)
    frames = np.zeros(len(index), dtype=np.int64)
    # The header's length does not depend on the number of frames (padded to 64 bytes), so a
    # placeholder is written first and the real one once the total is known.
    header_len = len(_npy_header((0, cfg.n_mels)))
    if len(_npy_header((10**15, cfg.n_mels))) != header_len:  # pragma: no cover - numpy change
        raise AsdError("unexpected .npy header layout")
    buffer: list[tuple[int, np.ndarray]] = []
    buffered = 0

    with open(folder / "mel.npy", "wb") as out:
        out.write(b"\0" * header_len)

        def flush() -> None:
            for (row, _), m in zip(buffer, _batched_mels(buffer, cfg), strict=True):
                frames[row] = m.shape[0]
                if stats_rows[row]:
                    moments.add(m)
                out.write(m.tobytes())
            buffer.clear()

        rows = progress_bar(range(len(index)), len(index), "log-mel", enabled=progress)
        for row in rows:
            wave = _read_clip(index.at[row, "path"], cfg)
            buffer.append((row, wave))
            buffered += len(wave)
            if buffered >= _CHUNK_SAMPLES:
                flush()
                buffered = 0
        flush()
        out.seek(0)
        out.write(_npy_header((int(frames.sum()), cfg.n_mels)))

    full = index.copy()
    full["frames"] = frames
    full["offset"] = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
    (folder / "index.json").write_text(full.to_json(orient="records"))
    mean, std = moments.result()
    meta = {
        "key": key,
        "version": CACHE_VERSION,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "fingerprint": fingerprint,
        "n_clips": len(index),
        "total_frames": int(frames.sum()),
        "mean": mean.tolist(),
        "std": std.tolist(),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _read_clip(path: str, cfg: FeatureConfig) -> np.ndarray:
    """One clip's waveform; AsdError naming the clip when it is too short for one frame."""
    wave = data.read_wav(path, cfg.sample_rate, cfg.channel)
    if len(wave) < cfg.hop_length:
        raise AsdError(
            f"features.hop_length={cfg.hop_length} is longer than clip {path} "
            f"({len(wave)} samples at {cfg.sample_rate} Hz)"
        )
    if len(wave) <= cfg.n_fft // 2:
        raise AsdError(
            f"clip {path} is too short: {len(wave)} samples at {cfg.sample_rate} Hz, "
            f"features.n_fft={cfg.n_fft} needs more than {cfg.n_fft // 2}"
        )
    return wave


def _batched_mels(buffer: list[tuple[int, np.ndarray]], cfg: FeatureConfig) -> list[np.ndarray]:
    """float16 log-mels (frames, n_mels) of the buffered waves, in order; one STFT per length."""
    by_len: dict[int, list[int]] = {}
    for slot, (_, wave) in enumerate(buffer):
        by_len.setdefault(len(wave), []).append(slot)
    mels: dict[int, np.ndarray] = {}
    for slots in by_len.values():
        batch = torch.from_numpy(np.stack([buffer[s][1] for s in slots]))
        with torch.no_grad():
            db = log_mel(batch, cfg)  # (b, n_mels, frames)
        db16 = db.transpose(1, 2).contiguous().numpy().astype(np.float16)
        for s, m in zip(slots, db16, strict=True):
            mels[s] = m  # (frames, n_mels)
    return [mels[s] for s in range(len(buffer))]
