"""What a sweep was run from, kept beside its parent run so it can be rerun or audited.

The parent MLflow run gets a ``provenance/`` folder: the search-space YAML as written, the
resolved base config every trial starts from (flat dotted keys), the data (root, fingerprint,
machine groups), the resolved run settings and the command line.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asd.sweep.settings import SweepSettings
    from asd.sweep.space import SearchSpace

ARTIFACT_PATH = "provenance"
"""Where the files go in the parent run's artifacts."""


def write_provenance(
    folder: Path,
    settings: SweepSettings,
    space_file: Path,
    space: SearchSpace,
    data: dict[str, Any],
) -> Path:
    """Write the provenance files into ``folder`` (replacing older ones) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(space_file, folder / "space.yaml")
    _write_json(folder / "base_config.json", space.base.to_flat())
    _write_json(folder / "data.json", data)
    _write_json(folder / "settings.json", dataclasses.asdict(settings))
    command = settings.command or "(not started from the command line)"
    (folder / "command.txt").write_text(command + "\n")
    return folder


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
