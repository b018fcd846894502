"""NT-Xent with several positives per clip: the original and its augmented views.

For anchor ``i`` the positives are the ``V - 1`` other copies of the same clip and the
negatives every other embedding in the (global) batch; the loss averages the log-softmax over
the positives (SupCon's "L_out" with instance labels). With ``V = 2`` it is SimCLR's NT-Xent.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z: Tensor, temperature: float) -> Tensor:
    """Mean contrastive loss of ``z`` (B clips, V copies, D dims); a scalar in float32.

    Embeddings are L2-normalised here, so callers pass raw projections. Computed in float32
    with autocast off: cosine similarities / 0.05 in bf16 would lose the ranking the loss needs.
    """
    if z.dim() != 3 or z.shape[1] < 2:
        raise ValueError(f"nt_xent needs z of shape (B, V>=2, D), got {tuple(z.shape)}")
    batch, views, _ = z.shape
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = F.normalize(z.float().flatten(0, 1), dim=-1)  # (N, D), N = B*V, clip-major
        logits = z @ z.T / temperature  # (N, N) cosine similarity / tau
        self_mask = torch.eye(logits.shape[0], dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))  # k != i in the denominator
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (N, N)
        clip = torch.arange(batch, device=z.device).repeat_interleave(views)  # (N,)
        positive = (clip[:, None] == clip[None, :]) & ~self_mask  # (N, N), V-1 per row
        # masked_fill, not multiply: the diagonal is -inf and -inf * 0 would be NaN
        per_anchor = log_prob.masked_fill(~positive, 0.0).sum(dim=1) / (views - 1)  # (N,)
        return -per_anchor.mean()


def gather_with_grad(z: Tensor) -> Tensor:
    """All-gather ``z`` (B, ...) along dim 0 over torch.distributed ranks -> (world*B, ...).

    The local slice keeps its graph, the others are constants, so each rank's loss sees the
    global batch (more negatives) while gradients flow into its own embeddings only. Every
    rank computes the same global loss, so after DDP averages gradients the result is
    ``grad(loss) / world_size`` (Adam does not mind the scale). Identity when not distributed.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return z
    world = dist.get_world_size()
    if world == 1:
        return z
    parts = [torch.empty_like(z) for _ in range(world)]
    dist.all_gather(parts, z.detach().contiguous())
    parts[dist.get_rank()] = z
    return torch.cat(parts, dim=0)
