"""One trial's encoder trained data parallel over several workers (GPUs) with Ray Train.

Called from inside a Tune function trainable when a trial has more than one GPU. The trial
function builds a :class:`ray.train.torch.TorchTrainer` whose workers each load the shared
feature cache and run the ordinary training loop (:func:`asd.model.train.train`), which turns
data parallel because Ray Train has initialised ``torch.distributed`` (NCCL on GPUs, gloo
on CPUs): ``train.batch_size`` stays the global batch and NT-Xent sees every negative of it.

Per epoch, every worker calls ``ray.train.report`` (Ray Train V2 needs all of them to); the
rank-0 worker first runs the caller's ``report`` (validation, MLflow) and attaches the
checkpoint. :class:`~ray.tune.integration.ray_train.TuneReportCallback` forwards rank 0's
metrics to the trial, so ASHA sees ``val_hmean`` each epoch. Note what Tune gets: the
metrics plus ``checkpoint_path`` (where Ray Train persisted the checkpoint), not a Tune
checkpoint. Resume therefore goes through Ray Train: a retried or restored trial builds the
trainer with the same ``storage_path`` and ``name``, Ray Train finds its own snapshot, and
``ray.train.get_checkpoint()`` in each worker gives the last epoch's ``last.pt``.

With one worker this works but costs a Train controller and worker group for nothing: use
the plain function trainable (``tune.with_resources(..., {"gpu": 1})``) instead.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asd.config import Config
from asd.detect.pipeline import train_encoder
from asd.errors import AsdError
from asd.features import load_features
from asd.model.compilation import use_compile_cache
from asd.model.encoder import Encoder
from asd.sweep.storage import copy_files, restore_checkpoint

if TYPE_CHECKING:
    from ray.train import Result

# Ray stays a lazy import in each function: the sweep driver imports this module before Ray
# is initialised, and the CLI must not pay for Ray at start-up.

RankZeroValidation = Callable[[int, dict[str, float], Encoder], dict[str, Any] | None]
"""``report(epoch, metrics, encoder) -> row``: runs on the rank-0 worker after every epoch
(validation, MLflow logging); the row it returns (e.g. with ``val_hmean``) is what Tune
gets that epoch (None: the training metrics). It is pickled to the workers: a module-level
function, a ``functools.partial`` or a small dataclass with ``__call__``, holding no Ray
objects, open connections or Tune calls (``tune.report`` raises inside a Train worker)."""


@dataclass(frozen=True)
class WorkerJob:
    """What every worker needs, pickled once into the train loop config."""

    cfg: Config
    features_path: str
    report: RankZeroValidation | None = None
    use_gpu: bool = False
    resume_from: str | None = None
    """A folder holding ``last.pt`` to start from when Ray Train has no checkpoint of its own
    (e.g. the trial's Tune checkpoint from a plain single-GPU run)."""
    progress: bool = True
    compile_cache: str | None = None
    """torch.compile cache folder shared by the sweep's trials (see asd.model.compilation)."""


def train_data_parallel(
    cfg: Config,
    features_path: str | Path,
    workers: int,
    use_gpu: bool,
    report: RankZeroValidation | None = None,
    *,
    storage_path: str | Path,
    name: str = "train",
    cpus_per_worker: float = 1.0,
    resume_from: str | Path | None = None,
    progress: bool = True,
    compile_cache: str | None = None,
) -> Result:
    """Train ``cfg``'s encoder on ``workers`` data-parallel Ray Train workers; the Train result.

    ``features_path`` is a feature cache folder (:func:`asd.features.load_features`); the
    encoder learns from its normal train clips, as :func:`asd.detect.pipeline.train_encoder` does.
    Each worker holds one GPU with ``use_gpu`` (plus ``cpus_per_worker`` CPUs); the Tune
    trial that calls this should request almost nothing itself (the workers' placement group
    holds the GPUs), and the sweep should cap ``max_concurrent_trials`` at
    ``total_gpus // workers``. ``storage_path``/``name`` is where Ray Train keeps this run's
    checkpoints: give a retried trial the same pair (its trial folder) and it resumes.

    Inside a Tune trial, rank 0's per-epoch metrics (with ``checkpoint_path``) are forwarded
    to Tune; outside one it just trains. Returns :class:`ray.train.Result` (``metrics`` of
    the last epoch, ``checkpoint`` holding ``last.pt``). Raises AsdError on bad settings;
    worker failures come back as Ray Train's ``TrainingFailedError``.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    _check_workers(cfg, workers)
    job = WorkerJob(
        cfg=cfg,
        features_path=str(features_path),
        report=report,
        use_gpu=use_gpu,
        resume_from=str(resume_from) if resume_from is not None else None,
        progress=progress,
        compile_cache=compile_cache,
    )
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            storage_path=str(storage_path),
            name=name,
            callbacks=_forward_to_tune(),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    return trainer.fit()


def _check_workers(cfg: Config, workers: int) -> None:
    """Refuse a worker count the global batch cannot feed."""
    if workers < 1:
        raise AsdError(f"workers per trial must be at least 1, got {workers}")
    if cfg.train.batch_size < workers:
        raise AsdError(
            f"train.batch_size={cfg.train.batch_size} is the global batch: it needs at least "
            f"one clip per worker ({workers} workers)"
        )


def _forward_to_tune() -> list[Any]:
    """Ray Train callbacks that pass rank 0's rows on to the Tune trial (none outside one)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    callbacks: list[Any] = []  # Train V2 takes UserCallbacks; its annotation says Callback
    try:
        callbacks.append(TuneReportCallback())
    except RuntimeError:  # not inside a Tune trial: nothing to forward to
        pass
    return callbacks


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker loop: features, restored checkpoint, then :func:`asd.model.train.train`."""
    import ray.train
    import ray.train.torch

    job: WorkerJob = config["job"]
    rank = ray.train.get_context().get_world_rank()
    if job.compile_cache:
        use_compile_cache(job.compile_cache)
    features = load_features(job.features_path)
    ckpt_dir = Path(tempfile.mkdtemp(prefix=f"asd-rank{rank}-"))
    try:
        if not restore_checkpoint(ray.train.get_checkpoint(), ckpt_dir) and job.resume_from:
            copy_files(Path(job.resume_from), ckpt_dir)
        device = ray.train.torch.get_device() if job.use_gpu else "cpu"
        train_encoder(
            job.cfg,
            features,
            device=str(device),
            report=ForwardToTrain(job.report, str(ckpt_dir), rank),
            checkpoint_dir=ckpt_dir,
            progress=job.progress,
        )
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)


@dataclass
class ForwardToTrain:
    """``asd.model.train.Report`` for one worker: rank 0 evaluates; every rank reports to Train."""

    report: RankZeroValidation | None
    checkpoint_dir: str
    rank: int

    def __call__(self, epoch: int, metrics: dict[str, float], encoder: Encoder) -> None:
        """Run the caller's report on rank 0, then ``ray.train.report`` on every rank."""
        import ray.train

        row: dict[str, Any] = dict(metrics)  # other ranks' rows only keep the barrier
        checkpoint = None
        if self.rank == 0:
            if self.report is not None:
                row = self.report(epoch, dict(metrics), encoder) or row
            # train() wrote last.pt (rank 0 only) before calling us
            checkpoint = ray.train.Checkpoint.from_directory(self.checkpoint_dir)
        ray.train.report(row, checkpoint=checkpoint, delete_local_checkpoint_after_upload=False)
