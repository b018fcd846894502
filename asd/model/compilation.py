"""torch.compile for the training step: when it is on, and where its caches live.

Compiling the encoder's forward and backward is worth ~1.4x on an H100 (see the README);
the first compile costs ~25 s there, so every trial of a sweep shares one cache folder and
only the first trial pays it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from asd.errors import AsdError

COMPILE_SETTINGS = ("auto", "on", "off")
"""Values of ``train.compile``."""

COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
"""Where inductor keeps its FX-graph, autograd and kernel caches (read at each compile)."""


def compile_enabled(setting: str, device: torch.device) -> bool:
    """``train.compile`` resolved for ``device``: 'auto' compiles on CUDA only.

    On a CPU the inductor's C++ compile takes minutes for a step that is itself slow, so
    'auto' leaves it off; 'on' forces it anywhere.
    """
    if setting not in COMPILE_SETTINGS:
        raise AsdError(f"train.compile must be one of {COMPILE_SETTINGS}, got {setting!r}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def use_compile_cache(folder: str | Path) -> Path:
    """Point this process's torch.compile caches at ``folder`` and return it.

    Every trial of a sweep sets the same folder under the work folder, so the first trial
    pays the compile and later ones (new processes or reused actors) load its kernels.
    """
    path = Path(folder).resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[COMPILE_CACHE_ENV] = str(path)
    return path
