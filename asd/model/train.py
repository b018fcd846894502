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

Every rank passes the same clips; on CUDA ``device`` should be the rank's GPU ('auto' takes
``torch.cuda.current_device()``, which Ray Train sets). Only rank 0 writes ``last.pt`` (every
rank resumes from its ``checkpoint_dir``, which may be shared) and prints progress; ``report``
is called on every rank with the same metrics, so a report that logs or evaluates should do so
on rank 0 only (:func:`world_rank`). Resuming with another number of ranks works but changes
the augmentation stream.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from asd.config import Config
from asd.errors import AsdError
from asd.model.augment import make_views
from asd.model.batches import Array, TrainClips, random_crops, resident_clips
from asd.model.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from asd.model.compilation import compile_enabled
from asd.model.contrastive import nt_xent
from asd.model.distributed import (
    check_same_start,
    gather_shards,
    rank_seed,
    shard_sizes,
    world_rank,
)
from asd.model.encoder import Encoder, plain_batchnorm
from asd.model.margin import ClassLabels, EncoderWithHead, MarginHead, make_head
from asd.model.schedule import make_scheduler, schedule_time, steps_per_epoch

Report = Callable[[int, dict[str, float], Encoder], None]
"""``report(epoch, metrics, encoder)``: called after every epoch (1-based), on every rank
when data parallel (Ray Train needs every worker to report; see :func:`world_rank`)."""


@dataclass
class TrainResult:
    """A trained encoder (eval mode, on the training device) and its per-epoch history."""

    encoder: Encoder
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per epoch since the start (resumed epochs included)."""
    epochs_run: int = 0
    """Epochs this call ran (fewer than ``len(history)`` after a resume)."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch.device.

    AsdError for a name torch does not know or a GPU this machine does not have, so that
    ``--device cuda`` on a CPU machine is one line before any work, not a driver traceback.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        known = "use auto, cpu, cuda or cuda:N"
        raise AsdError(f"unknown device '{device}' ({known}): {exc}") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise AsdError(f"device '{device}': no CUDA GPU is available here; use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise AsdError(
                f"device '{device}': this machine has {count} CUDA GPU(s) (cuda:0 to "
                f"cuda:{count - 1})"
            )
    return resolved


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
    data: TrainClips,
    device: str | torch.device = "auto",
    report: Report | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    checkpoint_every: int = 1,
) -> TrainResult:
    """Train an encoder on ``data``'s normal clips (N, n_mels, L) dB with valid lengths (N,).

    Its ``mean``/``std`` (n_mels,) go into the encoder's normalisation buffers. With
    ``checkpoint_dir`` the state is saved to ``last.pt`` after every ``checkpoint_every``-th
    epoch (0: the last only) and the last (a write holds model and optimiser state); with
    ``resume``, a run picks up after the last saved epoch with the same result as an
    uninterrupted one (on CPU). Raises AsdError on bad inputs and on a non-finite loss.
    Its ``labels`` (:func:`asd.model.margin.class_labels`) feed the head ``loss.aux_weight`` adds.

    Data parallel under torch.distributed: see the module docstring (which rank writes,
    prints and should log).
    """
    run = _setup(cfg, data, device, checkpoint_dir, resume)
    t, steps = cfg.train, run.steps
    for epoch in range(run.start_epoch, t.epochs + 1):
        run.model.train()
        began = time.perf_counter()
        if run.parallel:
            run.aug_generator.manual_seed(rank_seed(t.seed, steps.rank, epoch))
        step_losses, aux_losses, lr = _run_epoch(
            steps, run.model, run.optimizer, run.scheduler, epoch
        )
        clips_seen = steps.n_steps * steps.batch
        metrics = _epoch_metrics(step_losses, aux_losses, cfg, epoch, lr, began, clips_seen)
        run.history.append(metrics)
        due = epoch == t.epochs or (checkpoint_every > 0 and epoch % checkpoint_every == 0)
        if run.ckpt_path is not None and steps.rank == 0 and due:
            save_checkpoint(
                run.ckpt_path, run.encoder, run.optimizer, run.scheduler, steps.generator, epoch,
                run.history, cfg, run.head,
            )  # fmt: skip
        if progress and steps.rank == 0:
            print(
                f"train epoch {epoch}/{t.epochs} loss {metrics['loss']:.4f} lr {lr:.3g} "
                f"{metrics['seconds']:.1f}s {metrics['samples_per_s']:.0f} samples/s",
                file=sys.stderr,
                flush=True,
            )
        if report is not None:
            run.encoder.eval()
            report(epoch, dict(metrics), run.encoder)
    run.encoder.eval()
    if run.parallel and steps.device.type == "cuda":
        plain_batchnorm(run.encoder)
    epochs_run = max(0, t.epochs + 1 - run.start_epoch)
    return TrainResult(encoder=run.encoder, history=run.history, epochs_run=epochs_run)


@dataclass
class _Run:
    """A set-up training run: its model, optimiser, schedule and where it resumes."""

    encoder: Encoder
    head: MarginHead | None
    model: nn.Module
    """What a step runs: encoder (+ head), under DDP when parallel, compiled if asked."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts
    aug_generator: torch.Generator
    steps: _Steps
    parallel: bool
    ckpt_path: Path | None
    history: list[dict[str, float]]
    start_epoch: int


def _setup(
    cfg: Config,
    data: TrainClips,
    device: str | torch.device,
    checkpoint_dir: str | Path | None,
    resume: bool,
) -> _Run:
    """Device, resident clips, seeded model, optimiser, schedule and streams; resumed if asked."""
    t = cfg.train
    rank, world = world_rank()
    parallel = world > 1
    device = resolve_device(device)
    on_cuda = device.type == "cuda"
    if parallel and on_cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    autocast = precision(device, t.amp)
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed crop shapes: let cuDNN pick its kernels
    clips_t, valid = resident_clips(data, cfg, device, world)
    n_clips = clips_t.shape[0]
    compiled = compile_enabled(t.compile, device)
    n_steps = steps_per_epoch(n_clips, t.batch_size, world, drop_last=compiled)
    batch = min(t.batch_size, n_clips)
    encoder, head, labels_t, optimizer = _model_and_optimizer(
        cfg, data.mean, data.std, data.labels, n_clips, device, parallel
    )
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
        state = load_checkpoint(ckpt_path, cfg, device)
        encoder.load_state_dict(state["model"])
        if head is not None:
            head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
    model = _parallel_model(encoder, head, cfg, device, parallel, compiled, start_epoch)
    steps = _Steps(
        clips_t, valid, cfg, generator, aug_generator, rank, world, autocast,
        None if head is None else labels_t, encoder_params, n_steps, batch, device,
    )  # fmt: skip
    return _Run(
        encoder, head, model, optimizer, scheduler, aug_generator, steps, parallel, ckpt_path,
        history, start_epoch,
    )  # fmt: skip


def _model_and_optimizer(
    cfg: Config,
    mean: Array,
    std: Array,
    labels: ClassLabels | None,
    n_clips: int,
    device: torch.device,
    parallel: bool,
) -> tuple[Encoder, MarginHead | None, Any, torch.optim.Optimizer]:
    """The seeded encoder (with the aux head and its labels, if any) on ``device``, and Adam."""
    t = cfg.train
    on_cuda = device.type == "cuda"
    torch.manual_seed(t.seed)
    encoder = Encoder(cfg.encoder, cfg.features.n_mels)
    encoder.set_normalization(mean, std)
    head, labels_t = make_head(cfg, encoder, labels, n_clips, device)  # None for the paper
    if parallel and on_cuda:
        # BN statistics of the global batch, as one process has them; swaps the BN children
        # in place and shares their parameters, so ``encoder`` stays the module to save
        nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    encoder.to(device)
    if on_cuda and t.channels_last:
        encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fused: dict[str, Any] = {"fused": True} if on_cuda else {}  # one kernel per update on GPU
    params = list(encoder.parameters()) + (list(head.parameters()) if head else [])
    optimizer = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, **fused)
    return encoder, head, labels_t, optimizer


def _parallel_model(
    encoder: Encoder,
    head: MarginHead | None,
    cfg: Config,
    device: torch.device,
    parallel: bool,
    compiled: bool,
    start_epoch: int,
) -> nn.Module:
    """The module a step runs: encoder (+ head), under DDP when parallel, compiled if asked."""
    model: nn.Module = encoder if head is None else EncoderWithHead(encoder, head)
    if parallel:
        check_same_start(start_epoch, device)
        # DDP broadcasts rank 0's weights and buffers now and averages gradients in backward
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compiled:
        # forward and backward of the encoder as generated kernels; the augmentation (random
        # streams) and the loss stay eager. Static shapes: the epoch has no short last batch.
        model = cast(
            nn.Module, torch.compile(model, backend=cfg.train.compile_backend, dynamic=False)
        )
    return model


@dataclass(frozen=True)
class _Steps:
    """What every step of a run uses, fixed once the run is set up."""

    clips: torch.Tensor
    valid: torch.Tensor
    cfg: Config
    generator: torch.Generator
    aug_generator: torch.Generator
    rank: int
    world: int
    autocast: contextlib.AbstractContextManager[Any]
    labels: torch.Tensor | None
    """(N,) class of every clip for the aux head; None without one."""
    encoder_params: list[nn.Parameter]
    n_steps: int
    batch: int
    device: torch.device


def _run_epoch(
    run: _Steps, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """One epoch's steps; their (device) losses, aux losses, and the last step's rate."""
    cfg, n_steps, batch = run.cfg, run.n_steps, run.batch
    loss_scale = float(run.world)  # DDP averages; gather_with_grad keeps only local gradients
    order = torch.randperm(run.clips.shape[0], generator=run.generator, device=run.device)
    step_losses, aux_losses = [], []
    for step in range(n_steps):
        positions = order[step * batch : (step + 1) * batch]  # (B,) the global batch
        x, sizes, local = make_batch(
            run.clips, run.valid, positions, cfg, run.generator, run.aug_generator, run.rank,
            run.world,
        )  # fmt: skip
        y = None if run.labels is None else run.labels[local]  # (B,) classes of this shard
        loss, aux = train_step(
            model, optimizer, x, cfg, run.autocast, sizes, loss_scale, y, run.encoder_params
        )
        if aux is not None:
            aux_losses.append(aux)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        global_step = (epoch - 1) * n_steps + step + 1
        scheduler.step(schedule_time(global_step, n_steps, cfg))
        step_losses.append(loss)
    return step_losses, aux_losses, lr


def _epoch_metrics(
    step_losses: list[torch.Tensor],
    aux_losses: list[torch.Tensor],
    cfg: Config,
    epoch: int,
    lr: float,
    began: float,
    clips_seen: int,
) -> dict[str, float]:
    """One epoch's history entry; AsdError naming the step when a loss is not finite.

    One host sync per epoch: the GPU never waits on a per-step ``.item()``.
    """
    t = cfg.train
    losses = torch.stack(step_losses)
    finite = torch.isfinite(losses)
    if aux_losses:
        finite &= torch.isfinite(torch.stack(aux_losses))
    if not bool(finite.all()):
        bad_step = int((~finite).nonzero()[0, 0]) + 1
        kind = "NaN" if math.isnan(float(losses[bad_step - 1])) else "infinite"
        raise AsdError(
            f"loss became {kind} at epoch {epoch}, step "
            f"{bad_step} (train.lr={t.lr}, loss.temperature={cfg.loss.temperature}, "
            f"train.grad_clip={t.grad_clip}): lower train.lr or set train.grad_clip"
        )
    seconds = time.perf_counter() - began
    metrics = {
        "epoch": float(epoch),
        "loss": float(losses.mean()),
        "lr": float(lr),
        "seconds": seconds,
        "samples_per_s": clips_seen * (1 + cfg.augment.n_views) / seconds,
    }
    if aux_losses:
        metrics["aux_loss"] = float(torch.stack(aux_losses).mean())
    return metrics
