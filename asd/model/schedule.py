"""Epoch arithmetic and the learning-rate schedule of a training run.

Why it exists: the number of steps per epoch (no one-clip last batch, none a data-parallel
rank would miss, none a compiled step would recompile for) and the cosine warm-restart clock
are what makes a resumed or data-parallel run match a plain one step for step.
"""

from __future__ import annotations

import math

import torch

from asd.config import Config


def steps_per_epoch(n_clips: int, batch_size: int, world: int = 1, drop_last: bool = False) -> int:
    """ceil(N / batch_size), minus a final batch of one clip (it has no negatives).

    Data parallel over ``world`` ranks, a final batch of fewer than ``world`` clips is
    dropped too (some rank would have none). ``drop_last`` drops any short final batch: a
    compiled step then sees one batch shape and never recompiles.
    """
    if drop_last and n_clips >= batch_size:
        return n_clips // batch_size
    steps = math.ceil(n_clips / batch_size)
    if n_clips - (steps - 1) * batch_size < max(2, world):
        steps -= 1
    return steps


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config
) -> torch.optim.lr_scheduler.CosineAnnealingWarmRestarts:
    """Cosine annealing with ``restarts + 1`` equal cycles over the whole run.

    The scheduler's clock is ``fractional_epoch * (restarts + 1)`` (see :func:`schedule_time`)
    so that ``T_0 = epochs`` on that clock is ``epochs / (restarts + 1)`` real epochs, an
    integer as torch requires, whatever the number of steps per epoch.
    """
    t = cfg.train
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=t.epochs, T_mult=1, eta_min=t.lr_min
    )


def schedule_time(global_step: int, n_steps_per_epoch: int, cfg: Config) -> float:
    """The scheduler clock after ``global_step`` steps (exact at cycle boundaries)."""
    return global_step * (cfg.train.restarts + 1) / n_steps_per_epoch
