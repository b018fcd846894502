"""What a data set *is*: a hash of every clip's bytes, kept fast by a stat-keyed hash store.

The feature cache, a run folder's resume check and promotion all trust a data fingerprint,
so it must change when any clip's bytes change (a clip rewritten in place at the same size
included) and must not change when the same bytes sit at another path. Hashing every byte
on every call is slow for a 7,000-clip tree, so a store beside the cache remembers each
file's ``(size, mtime_ns, inode, device)`` and the hash of its bytes: an unchanged file is
one ``stat``, an edited or copied one is re-hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from asd.errors import AsdError

STORE_NAME = "content-hashes.json"
"""File name of the hash store inside a feature cache folder."""

_READ_BYTES = 1 << 20


def _signature(path: str) -> list[int]:
    """``[size, mtime_ns, inode, device]``: changes whenever the file may have changed."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise AsdError(f"cannot read {path}: {exc.strerror or exc}") from None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def file_digest(path: str) -> str:
    """BLAKE2b of a file's bytes (hex, 32 characters)."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_READ_BYTES):
                h.update(chunk)
    except OSError as exc:
        raise AsdError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


class HashStore:
    """``{absolute path: [size, mtime_ns, inode, device, digest]}`` in one JSON file.

    Without a file (``path=None``) it still works, hashing every clip each time.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, list] = {}
        self.changed = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self.entries = loaded
            except (OSError, ValueError):
                self.entries = {}  # a broken store only costs a re-hash

    def digest(self, path: str) -> str:
        """The content hash of ``path``, re-hashed only when its signature changed."""
        key = os.path.abspath(path)
        sig = _signature(key)
        entry = self.entries.get(key)
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == sig:
            return str(entry[4])
        digest = file_digest(key)
        self.entries[key] = [*sig, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        """Write the store atomically (tmp + rename) when something was hashed."""
        if self.path is None or not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.path)
        self.changed = False


def verify_store(paths: Iterable[str], store: Path) -> tuple[int, list[str]]:
    """Re-hash every path, ignoring what the store trusts; (clips checked, those that changed).

    The store trusts a file whose size, mtime, inode and device are unchanged; a tool that
    edits a file in place and restores its mtime (``touch -r``, ``rsync -t``-like copies)
    defeats that. This reads every byte again and corrects the store, so the next run's
    fingerprint (and feature cache key) follow the bytes.
    """
    hashes = HashStore(store)
    changed, checked = [], 0
    for path in paths:
        key = os.path.abspath(path)
        entry, sig = hashes.entries.get(key), _signature(key)
        digest = file_digest(key)
        checked += 1
        trusted = isinstance(entry, list) and len(entry) == 5 and entry[:4] == sig
        if trusted and entry[4] != digest:  # type: ignore[index]
            changed.append(str(path))  # the store would have served the old hash
        hashes.entries[key] = [*sig, digest]
        hashes.changed = True
    hashes.save()
    return checked, changed


def clip_digests(paths: Iterable[str], store: Path | None = None) -> list[str]:
    """Content hash of each path, in order, using (and updating) the store at ``store``."""
    hashes = HashStore(store)
    digests = [hashes.digest(str(p)) for p in paths]
    hashes.save()
    return digests


def content_fingerprint(index: pd.DataFrame, store: Path | None = None) -> str:
    """Hash of every clip's ``machine/split/name`` and bytes: the same data anywhere, same value.

    Where the folder is not the split (MIMII and ToyADMOS, split by a manifest), the index's
    split is hashed too: a new split of the same files is other data (its caches differ).
    """
    paths = [str(p) for p in index["path"]]
    splits = index["split"].astype(str).tolist() if "split" in index else [""] * len(paths)
    digests = clip_digests(paths, store)
    h = hashlib.sha256()
    for path, digest, split in zip(paths, digests, splits, strict=True):
        p = Path(path)
        folder = p.parent.name if split in ("", p.parent.name) else f"{p.parent.name}@{split}"
        h.update(f"{p.parent.parent.name}/{folder}/{p.name}:{digest}\n".encode())
    return h.hexdigest()[:16]
