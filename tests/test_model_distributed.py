import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from asd.errors import AsdError
from asd.model.distributed import (
    check_same_start,
    gather_shards,
    rank_seed,
    shard_sizes,
    world_rank,
)


def test_not_distributed_is_rank_zero_of_one_and_gathers_nothing():
    assert world_rank() == (0, 1)
    z = torch.arange(6.0).reshape(3, 2)
    assert gather_shards(z, [3]) is z


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_cover_the_batch_as_evenly_as_possible_larger_first(world):
    for batch in range(world, 30):
        sizes = shard_sizes(batch, world)
        assert len(sizes) == world and sum(sizes) == batch
        assert max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)  # the first batch % world ranks hold one more


def test_rank_seeds_are_reproducible_and_distinct_per_rank_and_epoch():
    seeds = {(rank, epoch): rank_seed(7, rank, epoch) for rank in range(4) for epoch in range(5)}
    assert len(set(seeds.values())) == len(seeds)
    assert rank_seed(7, 2, 3) == seeds[(2, 3)]
    assert rank_seed(8, 2, 3) != seeds[(2, 3)]


WORLD = 3
SIZES = [3, 2, 2]  # a 7-clip global batch


def _rank(rank, store, out, starts):
    """One gloo rank: gather its shard of the global batch, then check the resume epochs."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        offset = sum(SIZES[:rank])
        local = torch.arange(offset, offset + SIZES[rank], dtype=torch.float32)
        z = (local[:, None] * torch.tensor([1.0, -1.0])).requires_grad_()  # (n_rank, 2)
        full = gather_shards(z, SIZES)  # (7, 2)
        full.sum().backward()
        result = {"world_rank": world_rank(), "full": full.detach(), "grad": z.grad}
        check_same_start(4, torch.device("cpu"))  # every rank at epoch 4: no error
        try:
            check_same_start(starts[rank], torch.device("cpu"))
            result["start"] = "same"
        except AsdError as err:
            result["start"] = str(err)
        torch.save(result, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, starts):
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path), starts), nprocs=WORLD)
    return [torch.load(tmp_path / f"{rank}.pt") for rank in range(WORLD)]


def test_unequal_shards_gather_into_the_global_batch_in_rank_order(tmp_path):
    results = _spawn(tmp_path, starts=[2, 5, 2])
    expected = torch.arange(7.0)[:, None] * torch.tensor([1.0, -1.0])
    for rank, result in enumerate(results):
        assert result["world_rank"] == (rank, WORLD)
        torch.testing.assert_close(result["full"], expected)  # no padding rows left in
        # gradients flow into the rank's own rows only, one per element
        np.testing.assert_array_equal(result["grad"].numpy(), np.ones((SIZES[rank], 2)))
        assert result["start"] == (
            "data-parallel ranks would resume from epochs 2..5: give every rank the same checkpoint"
        )
