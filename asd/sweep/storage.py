"""Where Tune keeps a sweep: a local folder or a URI (``s3://``, ``gs://``...) passed to Ray as is.

Ray resolves storage with pyarrow filesystems, so the checks the driver makes before a sweep
(does this sweep exist? which is the latest?) go through the same filesystem. An S3-compatible
service other than AWS is named by the standard ``AWS_ENDPOINT_URL`` variable (or the URI's
``?endpoint_override=`` query); pyarrow reads the credentials from the standard AWS variables
or files itself: this module never touches them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from asd.errors import AsdError

if TYPE_CHECKING:
    import pyarrow.fs
    from ray.train import Checkpoint
    from ray.tune import Result

ENCODER_FILE = "encoder.pt"
"""The file an encoder trial adds to its last checkpoint: the encoder with its config."""
CONFIG_FILE = "config.json"
"""The file every trial adds to its last checkpoint: the config its detector is rebuilt from."""


def is_uri(storage: str) -> bool:
    """``scheme://...`` (not a local path): handed to Ray unchanged."""
    scheme, sep, _ = storage.partition("://")
    return bool(sep) and scheme.isalnum() and len(scheme) > 1


def storage_root(storage_path: str | None, workdir: Path) -> str:
    """The Tune storage: a URI as given, a local path made absolute; <workdir>/ray_results."""
    if storage_path and is_uri(storage_path):
        return storage_path.rstrip("/")
    return str(Path(storage_path or workdir / "ray_results").resolve())


# pyarrow comes with Ray (its storage layer) and is as heavy to import: imported where used.


def _filesystem(storage: str | Path) -> tuple[pyarrow.fs.FileSystem, str]:
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(str(storage))  # type: ignore[no-any-return]
    except (ValueError, OSError) as exc:
        raise AsdError(f"storage {storage}: {exc}") from None


def sweep_exists(storage: str | Path, name: str) -> bool:
    """Whether ``<storage>/<name>`` exists (a folder or an S3 prefix)."""
    import pyarrow.fs

    fs, root = _filesystem(storage)
    try:
        info = fs.get_file_info(f"{root}/{name}")
    except OSError as exc:
        raise AsdError(f"cannot read storage {storage}: {exc}") from None
    return info.type != pyarrow.fs.FileType.NotFound


def latest_sweep(storage: str | Path, prefix: str) -> str | None:
    """The name of the most recently changed sweep whose name starts with ``prefix``."""
    import pyarrow.fs

    fs, root = _filesystem(storage)
    try:
        found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError as exc:
        raise AsdError(f"cannot read storage {storage}: {exc}") from None
    sweeps = [
        info
        for info in found
        if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(prefix)
    ]
    if not sweeps:
        return None
    # Names end in <date>-<time>; object stores give no folder mtimes, so the name decides ties.
    newest = max(sweeps, key=lambda i: (i.mtime.timestamp() if i.mtime else 0.0, i.base_name))
    return str(newest.base_name)


def fetch_checkpoint(result: Result, trial_id: str, dest: Path) -> Path:
    """A trial's last Tune checkpoint, fetched from storage into ``dest`` (returned).

    The checkpoint travels through Tune's storage (a shared folder or a bucket), so this works
    whichever node ran the trial. It must hold the trial's ``config.json``; a trained detector's
    also holds its ``encoder.pt`` (the caller checks that, knowing the family).
    """
    checkpoint = result.checkpoint
    if checkpoint is None:
        raise AsdError(f"trial {trial_id} left no checkpoint in storage {result.path}")
    if dest.exists():
        shutil.rmtree(dest)  # a resumed sweep may have crowned another trial before
    dest.mkdir(parents=True)
    checkpoint.to_directory(str(dest))
    if not (dest / CONFIG_FILE).is_file():
        raise AsdError(
            f"trial {trial_id}'s last checkpoint ({checkpoint.path}) holds no {CONFIG_FILE}"
        )
    return dest


def restore_checkpoint(checkpoint: Checkpoint | None, dest: Path) -> bool:
    """Copy the files of a Tune or Ray Train checkpoint into ``dest``; False when there is none.

    Training resumes from ``dest/last.pt``: a trial Tune retried or restored starts after the
    last epoch it checkpointed, in one process or on every data-parallel worker.
    """
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as folder:
        copy_files(Path(folder), dest)
    return True


def copy_files(source: Path, dest: Path) -> None:
    """The plain files of ``source`` into ``dest`` (a checkpoint holds no folders)."""
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, dest / item.name)
