"""Data-parallel pieces of the training loop: ranks, shards of a global batch, gathers.

``asd.model.train.train`` trains data parallel when torch.distributed is initialised with more
than one rank (its module docstring says how the global batch is split and why the update
equals one process's); these helpers hold the collective parts, kept apart so the loop
reads top to bottom (``asd.model.encoder.plain_batchnorm`` undoes SyncBatchNorm).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from asd.errors import AsdError
from asd.model.contrastive import gather_with_grad


def world_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of the torch.distributed group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_sizes(batch: int, world: int) -> list[int]:
    """Clips per rank of a ``batch``-clip global batch: contiguous shards in rank order.

    As even as possible: the first ``batch % world`` ranks hold one clip more.
    """
    return [batch // world + (1 if r < batch % world else 0) for r in range(world)]


def gather_shards(z: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All-gather each rank's ``(sizes[rank], ...)`` rows into ``(sum(sizes), ...)``.

    Rank order, so the result is the global batch in the order one process would see it;
    the local rows keep their graph (:func:`~asd.model.contrastive.gather_with_grad`). Shards of
    unequal size are zero-padded for the collective and the padding dropped after it.
    """
    width = max(sizes)
    if min(sizes) == width:
        return gather_with_grad(z)
    pad = z.new_zeros((width - z.shape[0], *z.shape[1:]))
    full = gather_with_grad(torch.cat([z, pad]))  # (world * width, ...)
    keep = torch.cat(
        [torch.arange(r * width, r * width + n, device=z.device) for r, n in enumerate(sizes)]
    )
    return full[keep]


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """A seed for one rank's augmentation in one epoch (independent streams, resumable)."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, np.uint64)[0])


def check_same_start(start_epoch: int, device: torch.device) -> None:
    """Every rank must resume from the same epoch, or the collectives would mismatch."""
    ends = torch.tensor([start_epoch, -start_epoch], device=device)
    dist.all_reduce(ends, op=dist.ReduceOp.MAX)  # (max, -min)
    if int(ends[0]) != -int(ends[1]):
        raise AsdError(
            f"data-parallel ranks would resume from epochs {-int(ends[1])}..{int(ends[0])}: "
            "give every rank the same checkpoint"
        )
