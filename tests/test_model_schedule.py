import math

import pytest
import torch

from asd.config import Config
from asd.model.schedule import make_scheduler, schedule_time, steps_per_epoch


def _batches(n_clips, batch_size, world, drop_last):
    """The batch sizes an epoch of ``n_clips`` yields, written as a loop over the rule."""
    sizes = [min(batch_size, n_clips - start) for start in range(0, n_clips, batch_size)]
    last = sizes[-1]
    if drop_last and n_clips >= batch_size and last < batch_size:
        sizes.pop()
    elif last < max(2, world):  # one clip has no negatives; a rank would get none
        sizes.pop()
    return sizes


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_steps_per_epoch_counts_the_batches_the_rule_keeps(world, drop_last):
    for n_clips in range(2, 40):
        for batch_size in range(max(2, world), 12):
            expected = len(_batches(n_clips, batch_size, world, drop_last))
            got = steps_per_epoch(n_clips, batch_size, world, drop_last)
            assert got == expected, (n_clips, batch_size)


def test_steps_per_epoch_cases():
    assert steps_per_epoch(10, 4) == 3  # 4 + 4 + 2: a two-clip batch has negatives
    assert steps_per_epoch(9, 4) == 2  # 4 + 4 + 1: the lone clip is dropped
    assert steps_per_epoch(10, 4, world=4) == 2  # 2 clips cannot feed 4 ranks
    assert steps_per_epoch(10, 4, drop_last=True) == 2
    assert steps_per_epoch(3, 4, drop_last=True) == 1  # fewer clips than a batch: one batch


def _cfg(epochs, restarts, lr=0.5, lr_min=0.01):
    overrides = {"train.epochs": epochs, "train.restarts": restarts}
    return Config().with_overrides({**overrides, "train.lr": lr, "train.lr_min": lr_min})


def _lrs(cfg, n_steps_per_epoch):
    """The learning rate before each step of a whole run, as the training loop steps it."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=cfg.train.lr)
    scheduler = make_scheduler(optimizer, cfg)
    lrs = []
    for step in range(cfg.train.epochs * n_steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(schedule_time(step + 1, n_steps_per_epoch, cfg))
    return lrs


@pytest.mark.parametrize("n_steps", [1, 3, 7])
def test_the_run_is_restarts_plus_one_equal_cosine_cycles(n_steps):
    cfg = _cfg(epochs=4, restarts=1)
    lrs = _lrs(cfg, n_steps)
    steps = cfg.train.epochs * n_steps
    cycle = steps // 2
    for step, lr in enumerate(lrs):
        phase = (step % cycle) / cycle  # position in its cycle, 0 at a restart
        expected = 0.01 + (0.5 - 0.01) * (1 + math.cos(math.pi * phase)) / 2
        assert lr == pytest.approx(expected), step
    assert lrs[0] == lrs[cycle] == pytest.approx(0.5)  # the warm restart halfway


def test_schedule_time_is_exact_at_cycle_boundaries():
    cfg = _cfg(epochs=6, restarts=2)  # three cycles of two epochs
    n_steps = 7
    for epoch in (2, 4, 6):
        assert schedule_time(epoch * n_steps, n_steps, cfg) == cfg.train.epochs * epoch / 2
    assert schedule_time(0, n_steps, cfg) == 0.0
