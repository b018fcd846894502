import math

import pytest
import torch
import torch.nn.functional as F

from asd.model.contrastive import gather_with_grad, nt_xent


def slow_nt_xent(z, temperature):
    """The definition, one anchor and one positive at a time (float64)."""
    batch, views, _ = z.shape
    flat = [F.normalize(z[b, v].double(), dim=0) for b in range(batch) for v in range(views)]
    clip = [b for b in range(batch) for _ in range(views)]
    n = len(flat)
    total = 0.0
    for i in range(n):
        denom = sum(math.exp(float(flat[i] @ flat[k]) / temperature) for k in range(n) if k != i)
        terms = [
            math.log(math.exp(float(flat[i] @ flat[p]) / temperature) / denom)
            for p in range(n)
            if p != i and clip[p] == clip[i]
        ]
        total += -sum(terms) / len(terms)
    return total / n


@pytest.mark.parametrize(
    "batch, views, temperature",
    [(2, 2, 0.5), (3, 2, 0.1), (4, 3, 0.2), (5, 4, 1.0), (2, 7, 0.3), (6, 5, 0.07)],
)
def test_matches_slow_loop(batch, views, temperature):
    torch.manual_seed(batch * 10 + views)
    z = torch.randn(batch, views, 8)
    got = nt_xent(z, temperature)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(slow_nt_xent(z, temperature), rel=1e-4)


def test_two_views_is_simclr():
    """SimCLR Algorithm 1: l(2k-1, 2k) + l(2k, 2k-1), averaged over 2N."""
    torch.manual_seed(1)
    batch, tau = 5, 0.2
    a, b = F.normalize(torch.randn(batch, 8), dim=1), F.normalize(torch.randn(batch, 8), dim=1)
    reps = torch.cat([a, b])  # (2B, D): rows k and k+B are the pair
    sim = reps @ reps.T / tau
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)])
    simclr = F.cross_entropy(sim, target)
    torch.testing.assert_close(nt_xent(torch.stack([a, b], dim=1), tau), simclr)


def test_invariant_to_clip_and_view_order():
    torch.manual_seed(2)
    z = torch.randn(6, 3, 8)
    ref = nt_xent(z, 0.1)
    torch.testing.assert_close(nt_xent(z[torch.randperm(6)], 0.1), ref)
    torch.testing.assert_close(nt_xent(z[:, torch.randperm(3)], 0.1), ref)


def test_scale_invariant_and_stable_at_small_temperature():
    torch.manual_seed(3)
    z = torch.randn(4, 3, 8)
    torch.testing.assert_close(nt_xent(z * 1e3, 0.05), nt_xent(z, 0.05))
    assert torch.isfinite(nt_xent(z, 1e-4))


def test_closed_form_aligned_positives():
    """Copies identical, clips orthogonal: l_i = log((V-1) e^{1/t} + (N-V)) - 1/t."""
    batch, views, tau = 4, 3, 0.5
    z = torch.eye(batch)[:, None, :].expand(batch, views, batch)
    expected = math.log((views - 1) * math.exp(1 / tau) + (batch * views - views)) - 1 / tau
    assert nt_xent(z, tau).item() == pytest.approx(expected, rel=1e-5)
    random = nt_xent(torch.randn(batch, views, batch), tau)
    assert nt_xent(z, tau) < random
    # a lower temperature makes the aligned case more certain still
    assert nt_xent(z, 0.05) < nt_xent(z, tau)


def test_collapsed_embeddings_give_log_n_minus_one():
    batch, views = 3, 4
    z = torch.ones(batch, views, 5)
    expected = math.log(batch * views - 1)  # every logit equal
    assert nt_xent(z, 0.1).item() == pytest.approx(expected, rel=1e-5)


def test_gradient_flows_and_is_finite():
    torch.manual_seed(4)
    z = torch.randn(4, 3, 8, requires_grad=True)
    nt_xent(z, 0.05).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_autocast_is_float32():
    torch.manual_seed(5)
    z = torch.randn(4, 2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent(z.bfloat16(), 0.1)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(nt_xent(z.bfloat16().float(), 0.1).item(), rel=1e-5)


def test_rejects_single_view():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 1, 8), 0.1)


def test_gather_is_identity_without_distributed():
    z = torch.randn(3, 2, 4, requires_grad=True)
    assert gather_with_grad(z) is z


def _rank_grad(rank, store, full, out):
    """One of two gloo ranks: loss on the gathered batch, gradient of its own half."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        z = full[rank * 2 : rank * 2 + 2].clone().requires_grad_(True)
        gathered = gather_with_grad(z)
        nt_xent(gathered, 0.2).backward()
        torch.save({"gathered": gathered.detach(), "grad": z.grad}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gather_two_ranks_sees_global_batch(tmp_path):
    torch.manual_seed(6)
    full = torch.randn(4, 3, 8)
    torch.multiprocessing.spawn(
        _rank_grad, args=(str(tmp_path / "store"), full, str(tmp_path)), nprocs=2
    )
    z = full.clone().requires_grad_(True)
    nt_xent(z, 0.2).backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(got["gathered"], full)
        # each rank holds the exact global-loss gradient of its own clips
        torch.testing.assert_close(got["grad"], z.grad[rank * 2 : rank * 2 + 2])
