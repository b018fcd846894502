"""The training checkpoint ``last.pt``: everything a run needs to resume bit for bit.

Why it exists: a preempted or interrupted trial resumes after its last finished epoch with the
same result as an uninterrupted run (model, optimiser, schedule, random stream, history), and
a checkpoint written for another config is refused rather than silently mixed in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asd.config import Config
from asd.errors import AsdError
from asd.model.encoder import Encoder

CHECKPOINT_NAME = "last.pt"
"""File name of the checkpoint inside a run's ``checkpoint_dir``."""


def save_checkpoint(
    path: Path,
    encoder: Encoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    epoch: int,
    history: list[dict[str, float]],
    cfg: Config,
    head: nn.Module | None = None,
) -> None:
    """Write tmp then rename: a crash mid-write never leaves a broken ``last.pt``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": encoder.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "epoch": epoch,
        "history": history,
        "config": cfg.to_json(),
    }
    if head is not None:  # the auxiliary head resumes with its centres (and AdaCos scale)
        state["head"] = head.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Read ``last.pt``; refuse one written for a different config (it would not resume)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise AsdError(f"cannot read checkpoint {path}: {type(err).__name__}") from err
    if state.get("config") != cfg.to_json():
        saved = Config.from_json(state["config"]).to_flat() if "config" in state else {}
        diff = sorted(k for k, v in cfg.to_flat().items() if saved.get(k) != v)
        raise AsdError(
            f"checkpoint {path} was written for another config (differs in "
            f"{', '.join(diff) or 'format'}): train with --overwrite to start again"
        )
    state["generator"] = state["generator"].cpu()
    return state
