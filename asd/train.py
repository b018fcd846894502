"""One training loop: random crops -> augmented views -> encoder -> NT-Xent, per epoch.

Device, precision, memory format and data parallelism are chosen once at the top; the
features stay resident on that device and batches are cut from them with index arithmetic,
so a step never waits on Python loops over clips. Ray Tune and MLflow come in only through
the ``report`` callback.

Data parallel (``torch.distributed`` initialised with more than one rank, e.g. by Ray
Train): ``train.batch_size`` stays the *global* number of clips per step. Every rank draws
the same batch order and crops from an identically seeded stream, keeps its contiguous
shard of each global batch (split as evenly as possible), augments it with its own stream,
and all-gathers the embeddings so NT-Xent sees every negative of the global batch. The
loss is scaled by the world size before backward: each rank's gradient flows only through
its own embeddings and DDP averages, so the update equals the single-process update of the
same global batch. On CUDA, BatchNorm becomes SyncBatchNorm (statistics of the global
batch); on CPU (gloo) torch has no SyncBatchNorm and each rank normalises with its shard's
statistics, the one difference from a single process.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from asd.augment import make_views
from asd.compilation import compile_enabled
from asd.config import Config
from asd.contrastive import nt_xent
from asd.distributed import check_same_start, gather_shards, rank_seed, shard_sizes, world_rank
from asd.encoder import Encoder, plain_batchnorm
from asd.errors import AsdError
from asd.margin import ClassLabels, EncoderWithHead, make_head

Report = Callable[[int, dict[str, float], Encoder], None]
"""``report(epoch, metrics, encoder)``: called after every epoch (1-based), on every rank
when data parallel (Ray Train needs every worker to report; see :func:`world_rank`)."""

CHECKPOINT_NAME = "last.pt"


@dataclass
class TrainResult:
    """A trained encoder (eval mode, on the training device) and its per-epoch history."""

    encoder: Encoder
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per epoch since the start (resumed epochs included)."""
    epochs_run: int = 0
    """Epochs this call ran (fewer than ``len(history)`` after a resume)."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def tile_short_clips(clips: torch.Tensor, lengths: torch.Tensor, crop_frames: int) -> torch.Tensor:
    """(N, n_mels, L) -> (N, n_mels, max(L, crop)): each clip repeated past its valid length.

    Frame ``j`` of clip ``n`` becomes frame ``j % lengths[n]``, so every crop of
    ``max(length, crop_frames)`` frames from the start is real (tiled) audio.
    """
    width = max(clips.shape[-1], crop_frames)
    frame = torch.arange(width, device=clips.device)[None, :] % lengths[:, None]  # (N, W)
    return torch.gather(clips, 2, frame[:, None, :].expand(-1, clips.shape[1], -1))


def random_crops(
    clips: torch.Tensor,
    valid: torch.Tensor,
    positions: torch.Tensor,
    crop_frames: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """A random window of ``crop_frames`` inside each chosen clip's valid frames.

    clips (N, n_mels, W), valid (N,) frames >= crop_frames, positions (B,) -> (B, n_mels, crop).
    """
    room = valid[positions] - crop_frames + 1  # (B,) possible start frames
    u = torch.rand(positions.shape[0], generator=generator, device=clips.device)
    start = (u * room).long().clamp_max(room - 1)  # (B,)
    frame = start[:, None] + torch.arange(crop_frames, device=clips.device)  # (B, crop)
    chosen = clips[positions]  # (B, n_mels, W)
    return torch.gather(chosen, 2, frame[:, None, :].expand(-1, chosen.shape[1], -1))


def precision(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``amp``, else nothing (CPU trains in fp32)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_batch(
    clips: torch.Tensor,
    valid: torch.Tensor,
    positions: torch.Tensor,
    cfg: Config,
    generator: torch.Generator,
    aug_generator: torch.Generator,
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, list[int] | None, torch.Tensor]:
    """Crops of the chosen clips and their views: ``(B, V, n_mels, crop)``, V = 1 + n_views.

    Also returns the shard sizes for :func:`train_step`'s all-gather (None when not
    parallel) and the positions (B,) of the clips in ``x``: data parallel, only this rank's
    shard of the global batch is cut and augmented.
    """
    x = random_crops(clips, valid, positions, cfg.train.crop_frames, generator).float()
    sizes = None
    if world > 1:
        sizes = shard_sizes(x.shape[0], world)
        first = sum(sizes[:rank])
        x = x[first : first + sizes[rank]]  # (B_rank, M, T) this rank's shard
        positions = positions[first : first + sizes[rank]]
    views = make_views(x, cfg.augment, cfg.features, aug_generator)  # (B, n_views, M, T)
    return torch.cat([x[:, None], views], dim=1), sizes, positions  # (B, V, M, T)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    cfg: Config,
    autocast: contextlib.AbstractContextManager[Any],
    sizes: list[int] | None = None,
    loss_scale: float = 1.0,
    labels: torch.Tensor | None = None,
    clip_params: list[nn.Parameter] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimisation step on a batch ``x`` (B, V, M, T): (NT-Xent loss, aux loss or None).

    ``model`` is the encoder as trained (maybe with its margin head, compiled or
    DDP-wrapped); with ``labels`` (B,) it is an ``EncoderWithHead`` and every view carries its
    clip's class. With ``sizes`` the embeddings of every rank are gathered so NT-Xent sees
    the global batch. ``train.grad_clip`` clips ``clip_params`` (default: all the optimiser
    holds). The learning rate schedule is the caller's. Both losses come back detached.
    """
    aux = None
    with autocast:
        if labels is None:
            z = model(x.flatten(0, 1))  # (B*V, D)
        else:
            z, aux = model(x.flatten(0, 1), labels.repeat_interleave(x.shape[1]))  # y (B*V,)
    z = z.view(x.shape[0], x.shape[1], -1)  # (B, V, D)
    if sizes is not None:
        z = gather_shards(z, sizes)  # (global B, V, D): every negative of the batch
    loss = nt_xent(z, cfg.loss.temperature)
    total = loss * loss_scale  # the aux loss is local: DDP's average is the global one
    if aux is not None:
        total = total + cfg.loss.aux_weight * aux
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if cfg.train.grad_clip > 0:
        params = clip_params or [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
    optimizer.step()
    return loss.detach(), None if aux is None else aux.detach()


def train(
    cfg: Config,
    clips: Any,
    lengths: Any,
    mean: Any,
    std: Any,
    device: str | torch.device = "auto",
    report: Report | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    labels: ClassLabels | None = None,
) -> TrainResult:
    """Train an encoder on normal clips (N, n_mels, L) dB with valid ``lengths`` (N,).

    ``mean``/``std`` (n_mels,) go into the encoder's normalisation buffers. With
    ``checkpoint_dir`` the state is saved after every epoch to ``last.pt`` and, with
    ``resume``, a run picks up after the last saved epoch with the same result as an
    uninterrupted one (on CPU). Raises AsdError on bad inputs and on a non-finite loss.
    ``labels`` (:func:`asd.margin.class_labels`) feed the head ``loss.aux_weight`` adds.

    Under torch.distributed with more than one rank it trains data parallel (module
    docstring): every rank passes the same clips, on CUDA ``device`` should be the rank's
    GPU ('auto' takes ``torch.cuda.current_device()``, which Ray Train sets), only rank 0
    writes ``last.pt`` (every rank resumes from its ``checkpoint_dir``, which may be shared),
    only rank 0 prints progress, and ``report`` is called on every rank with the same
    metrics: a report that logs or evaluates should do so on rank 0 only
    (:func:`world_rank`). Resuming with another number of ranks works but changes the
    augmentation stream.
    """
    t = cfg.train
    # --- where and how it runs: decided once --------------------------------------------
    rank, world = world_rank()
    parallel = world > 1
    device = resolve_device(device)
    on_cuda = device.type == "cuda"
    if parallel and on_cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    autocast = precision(device, t.amp)
    channels_last = on_cuda and t.channels_last
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed crop shapes: let cuDNN pick its kernels

    # --- data: resident on the device, short clips tiled once ---------------------------
    clips_t = torch.as_tensor(np.asarray(clips) if not torch.is_tensor(clips) else clips)
    lengths_t = torch.as_tensor(np.asarray(lengths), dtype=torch.long).reshape(-1)
    if clips_t.dim() != 3 or clips_t.shape[1] != cfg.features.n_mels:
        raise AsdError(
            f"training clips have shape {tuple(clips_t.shape)}, expected "
            f"(N, features.n_mels={cfg.features.n_mels}, frames)"
        )
    n_clips = clips_t.shape[0]
    if n_clips < 2 or lengths_t.shape[0] != n_clips:
        raise AsdError(f"training needs at least 2 clips with one length each, got {n_clips}")
    if int(lengths_t.min()) < 1 or int(lengths_t.max()) > clips_t.shape[-1]:
        raise AsdError("training clip lengths must be between 1 and the padded frame count")
    if not clips_t.is_floating_point():
        clips_t = clips_t.float()
    clips_t, lengths_t = clips_t.to(device), lengths_t.to(device)
    if int(lengths_t.min()) < t.crop_frames:
        clips_t = tile_short_clips(clips_t, lengths_t, t.crop_frames)
    valid = lengths_t.clamp_min(t.crop_frames)  # (N,) frames a crop may come from
    if min(t.batch_size, n_clips) < world:
        raise AsdError(
            f"train.batch_size={t.batch_size} with {n_clips} clips cannot feed {world} "
            "data-parallel workers: every worker needs at least one clip per step"
        )
    compiled = compile_enabled(t.compile, device)
    n_steps = steps_per_epoch(n_clips, t.batch_size, world, drop_last=compiled)
    batch = min(t.batch_size, n_clips)
    n_copies = 1 + cfg.augment.n_views  # the original plus its views

    # --- model, optimiser, schedule, randomness -----------------------------------------
    torch.manual_seed(t.seed)
    encoder = Encoder(cfg.encoder, cfg.features.n_mels)
    encoder.set_normalization(mean, std)
    head, labels_t = make_head(cfg, encoder, labels, n_clips, device)  # None for the paper
    if parallel and on_cuda:
        # BN statistics of the global batch, as one process has them; swaps the BN children
        # in place and shares their parameters, so ``encoder`` stays the module to save
        nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    encoder.to(device)
    if channels_last:
        encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fused: dict[str, Any] = {"fused": True} if on_cuda else {}  # one kernel per update on GPU
    params = list(encoder.parameters()) + (list(head.parameters()) if head else [])
    optimizer = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, **fused)
    encoder_params = list(encoder.parameters())  # what train.grad_clip clips
    scheduler = make_scheduler(optimizer, cfg)
    generator = torch.Generator(device=device)
    generator.manual_seed(t.seed)  # batches, crops and augmentation: one stream
    # Data parallel: ``generator`` (same on every rank) draws batches and crops, and each
    # rank augments its shard from its own stream, reseeded per epoch so resume is exact.
    aug_generator = torch.Generator(device=device) if parallel else generator
    history: list[dict[str, float]] = []
    start_epoch = 1

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and resume and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path, cfg, device)
        encoder.load_state_dict(state["model"])
        if head is not None:
            head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1

    model: nn.Module = encoder if head is None else EncoderWithHead(encoder, head)
    if parallel:
        check_same_start(start_epoch, device)
        # DDP broadcasts rank 0's weights and buffers now and averages gradients in backward
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if on_cuda else None
        )
    if compiled:
        # forward and backward of the encoder as generated kernels; the augmentation (random
        # streams) and the loss stay eager. Static shapes: the epoch has no short last batch.
        model = cast(nn.Module, torch.compile(model, backend=t.compile_backend, dynamic=False))
    loss_scale = float(world)  # DDP averages; gather_with_grad keeps only local gradients

    # --- the loop ------------------------------------------------------------------------
    for epoch in range(start_epoch, t.epochs + 1):
        model.train()
        began = time.perf_counter()
        if parallel:
            aug_generator.manual_seed(rank_seed(t.seed, rank, epoch))
        order = torch.randperm(n_clips, generator=generator, device=device)
        step_losses, aux_losses = [], []
        for step in range(n_steps):
            positions = order[step * batch : (step + 1) * batch]  # (B,) the global batch
            x, sizes, local = make_batch(
                clips_t, valid, positions, cfg, generator, aug_generator, rank, world
            )
            y = None if head is None else labels_t[local]  # (B,) classes of this shard
            loss, aux = train_step(
                model, optimizer, x, cfg, autocast, sizes, loss_scale, y, encoder_params
            )
            if aux is not None:
                aux_losses.append(aux)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            global_step = (epoch - 1) * n_steps + step + 1
            scheduler.step(schedule_time(global_step, n_steps, cfg))
            step_losses.append(loss)

        # one host sync per epoch: the GPU never waits on a per-step .item()
        losses = torch.stack(step_losses)
        finite = torch.isfinite(losses)
        if aux_losses:
            finite &= torch.isfinite(torch.stack(aux_losses))
        if not bool(finite.all()):
            bad_step = int((~finite).nonzero()[0, 0]) + 1
            raise AsdError(
                f"loss became {_kind(float(losses[bad_step - 1]))} at epoch {epoch}, step "
                f"{bad_step} (train.lr={t.lr}, loss.temperature={cfg.loss.temperature}, "
                f"train.grad_clip={t.grad_clip}): lower train.lr or set train.grad_clip"
            )
        seconds = time.perf_counter() - began
        metrics = {
            "epoch": float(epoch),
            "loss": float(losses.mean()),
            "lr": float(lr),
            "seconds": seconds,
            "samples_per_s": n_steps * batch * n_copies / seconds,
        }
        if aux_losses:
            metrics["aux_loss"] = float(torch.stack(aux_losses).mean())
        history.append(metrics)
        if ckpt_path is not None and rank == 0:
            _save_checkpoint(
                ckpt_path, encoder, optimizer, scheduler, generator, epoch, history, cfg, head
            )
        if progress and rank == 0:
            print(
                f"train epoch {epoch}/{t.epochs} loss {metrics['loss']:.4f} lr {lr:.3g} "
                f"{seconds:.1f}s {metrics['samples_per_s']:.0f} samples/s",
                file=sys.stderr,
                flush=True,
            )
        if report is not None:
            encoder.eval()
            report(epoch, dict(metrics), encoder)

    encoder.eval()
    if parallel and on_cuda:
        plain_batchnorm(encoder)
    return TrainResult(
        encoder=encoder, history=history, epochs_run=max(0, t.epochs + 1 - start_epoch)
    )


def _kind(value: float) -> str:
    return "NaN" if math.isnan(value) else "infinite"


def _save_checkpoint(
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


def _load_checkpoint(path: Path, cfg: Config, device: torch.device) -> dict[str, Any]:
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
