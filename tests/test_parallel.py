"""Data-parallel training: two gloo ranks do what one process does with the same global batch.

The equivalence tests spawn 2 CPU ranks and compare one optimisation step with the
single-process step on the same clips. Two things would differ by design and are pinned
down: augmentation (each rank has its own stream) uses a recipe without randomness, and
BatchNorm (per-rank statistics on CPU, where torch has no SyncBatchNorm) is swapped for
GroupNorm, which does not look across the batch. Adam is swapped for plain SGD so that the
updated weights are ``w - lr * grad``: Adam's first step is ``lr * sign(grad)`` and would
hide a gradient off by a constant factor (a missing world-size scale). The Ray test runs
the real encoder and optimiser.
"""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import asd.model.train
from asd.config import Config
from asd.model.batches import TrainClips
from asd.model.encoder import Encoder
from asd.model.train import gather_shards, shard_sizes, train

N_MELS = 16
WORLD = 2


def tiny_config(batch):
    return Config().with_overrides(
        {
            "features.n_mels": N_MELS,
            "encoder.embedding_dim": 8,
            "encoder.head_hidden_dim": 16,
            # one view, a pitch shift of exactly 2 semitones: deterministic on every rank
            "augment.n_views": 1,
            "augment.recipes": ["pitch_up"],
            "augment.pitch_min_semitones": 2.0,
            "augment.pitch_max_semitones": 2.0,
            "train.epochs": 1,
            "train.batch_size": batch,
            "train.lr": 0.1,
            "train.restarts": 0,
            "train.crop_frames": 16,
            "loss.temperature": 0.2,
        }
    )


def tiny_clips(n, frames=24, seed=0):
    rng = np.random.default_rng(seed)
    profile = rng.normal(0, 8, size=(n, N_MELS, 1))
    clips = (-50 + profile + rng.normal(0, 2, size=(n, N_MELS, frames))).astype(np.float32)
    lengths = np.full(n, frames)
    lengths[-1] = 20
    return clips, lengths, clips.mean(axis=(0, 2)), clips.std(axis=(0, 2))


class GroupNormEncoder(Encoder):
    """The encoder with every BatchNorm2d replaced by a batch-independent GroupNorm."""

    def __init__(self, cfg, n_mels):
        super().__init__(cfg, n_mels)
        _swap_batchnorm(self)


def _swap_batchnorm(module):
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(1, child.num_features))
        else:
            _swap_batchnorm(child)


class PlainSGD(torch.optim.SGD):
    """Stands in for ``torch.optim.Adam(params, lr=..., weight_decay=...)`` in train()."""

    def __init__(self, params, lr, weight_decay=0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay)


# (clips, global batch): even shards [2, 2] and uneven ones [3, 2], one step each
CASES = [(4, 4), (5, 5)]


def _run(cfg, data):
    clips, lengths, mean, std = data
    reports = []
    result = train(
        cfg,
        TrainClips(clips, lengths, mean, std),
        device="cpu",
        progress=False,
        report=lambda epoch, metrics, enc: reports.append((epoch, metrics["loss"])),
    )
    state = {k: v.detach().clone() for k, v in result.encoder.state_dict().items()}
    return state, result.history, reports


def _rank_train(rank, store, out):
    """One of two gloo ranks: train one step of each case and save what came out."""
    torch.set_num_threads(1)
    asd.model.train.Encoder = GroupNormEncoder
    torch.optim.Adam = PlainSGD
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        for n, batch in CASES:
            state, history, reports = _run(tiny_config(batch), tiny_clips(n))
            torch.save(
                {"state": state, "history": history, "reports": reports},
                f"{out}/{n}_{rank}.pt",
            )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(_rank_train, args=(str(out / "store"), str(out)), nprocs=WORLD)
    return {
        (n, rank): torch.load(out / f"{n}_{rank}.pt", weights_only=False)
        for n, _ in CASES
        for rank in range(WORLD)
    }


@pytest.mark.parametrize("n, batch", CASES)
def test_one_step_on_two_ranks_equals_one_process(two_rank_runs, monkeypatch, n, batch):
    monkeypatch.setattr(asd.model.train, "Encoder", GroupNormEncoder)
    monkeypatch.setattr(torch.optim, "Adam", PlainSGD)
    ref_state, ref_history, _ = _run(tiny_config(batch), tiny_clips(n))
    assert len(ref_history) == 1  # exactly one optimisation step
    torch.manual_seed(tiny_config(batch).train.seed)  # the initial weights train() starts from
    initial = GroupNormEncoder(tiny_config(batch).encoder, N_MELS).state_dict()
    moved = max(float((ref_state[k] - initial[k]).abs().max()) for k in initial)
    assert moved > 1e-3  # the step changed the weights (so the comparison means something)
    worst = 0.0
    for rank in range(WORLD):
        got = two_rank_runs[(n, rank)]
        for key, value in ref_state.items():
            # SGD: equal weights after the step <=> equal gradients (lr 0.1, so 1e-6 in w
            # is 1e-5 in the gradient)
            torch.testing.assert_close(got["state"][key], value, rtol=1e-5, atol=1e-6)
            worst = max(worst, float((got["state"][key] - value).abs().max()))
        # the loss is the global-batch loss, the same number a single process computes
        assert math.isclose(got["history"][0]["loss"], ref_history[0]["loss"], rel_tol=1e-5)
        # every rank reports (Ray Train needs it), with the same metrics
        assert got["reports"] == [(1, got["history"][0]["loss"])]
    print(f"max |w(world=2) - w(world=1)| = {worst:.2e} ({n} clips, batch {batch})")


def test_shard_sizes_are_contiguous_and_even():
    assert shard_sizes(4, 2) == [2, 2]
    assert shard_sizes(5, 2) == [3, 2]
    assert shard_sizes(7, 3) == [3, 2, 2]
    assert sum(shard_sizes(48, 5)) == 48


def test_gather_shards_is_identity_without_distributed():
    z = torch.randn(3, 2, 4)
    assert gather_shards(z, [3]) is z


# --------------------------------------------------------------------------- Ray Train in Tune


def validation_hmean(features_path, cfg, epoch, metrics, encoder):
    """The rank-0 report a sweep trial passes: validation score of this epoch's encoder."""
    from asd.detect.detector import evaluate_detector
    from asd.features import load_features

    features = load_features(features_path)
    evaluation = evaluate_detector(encoder, features, cfg, ("ml",), companions=False)
    hmean = evaluation.by_estimator["ml"].summary["hmean"]
    return {**metrics, "val_hmean": hmean, "workers": dist.get_world_size()}


def parallel_trial(params, features_path, cfg):
    """A Tune function trainable whose one trial trains on two Ray Train workers."""
    import functools

    from ray import tune

    from asd.sweep.parallel import train_data_parallel

    trial_cfg = cfg.with_overrides(params)
    train_data_parallel(
        trial_cfg,
        features_path,
        workers=2,
        use_gpu=False,
        report=functools.partial(validation_hmean, features_path, trial_cfg),
        storage_path=tune.get_context().get_trial_dir(),
        name="train",
        cpus_per_worker=0.9,
        progress=False,
    )


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    from asd.data.index import index_dataset
    from asd.data.synth.tree import synthesize
    from asd.features import extract_features

    root = tmp_path_factory.mktemp("parallel_data")
    synthesize(
        root / "data",
        machines=("fan", "valve"),
        train_source=4,
        train_target=1,
        test_per_domain=2,
        seconds=1.0,
    )
    cfg = tiny_config(4).with_overrides({"augment.n_views": 2, "augment.recipes": ["noise"]})
    index = index_dataset(root / "data")
    features = extract_features(index, cfg.features, root / "features", progress=False)
    return str(features.path), cfg


@pytest.mark.slow
def test_two_worker_trial_reports_every_epoch_with_a_checkpoint(
    feature_cache, tmp_path, monkeypatch
):
    import ray
    from ray import tune

    features_path, cfg = feature_cache
    # Ray workers import this module's trainable: tests/ goes on their PYTHONPATH
    tests = str(Path(__file__).parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [tests, os.getenv("PYTHONPATH")]))
    )
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # Two logical CPUs: the trial driver, which only waits, takes 0.1 (Tune refuses 0)
        # and each of the two workers 0.9, so one trial and its worker group fit.
        trainable = tune.with_resources(
            tune.with_parameters(parallel_trial, features_path=features_path, cfg=cfg),
            {"cpu": 0.1},
        )
        results = tune.Tuner(
            trainable,
            param_space={"train.epochs": 2, "train.lr": 0.001},
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="ddp", verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    assert not results.errors
    history = results[0].metrics_dataframe
    assert list(history["epoch"]) == [1.0, 2.0]
    assert (history["workers"] == 2).all()
    assert np.isfinite(history["loss"]).all()
    assert history["val_hmean"].between(0, 1).all()
    last = Path(history["checkpoint_path"].iloc[-1])
    assert (last / "last.pt").is_file()
    state = torch.load(last / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
