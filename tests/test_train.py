import math

import numpy as np
import pytest
import torch

from asd.config import Config
from asd.errors import AsdError
from asd.model.batches import TrainClips, random_crops, tile_short_clips
from asd.model.train import TrainResult, make_scheduler, schedule_time, steps_per_epoch, train

N_MELS = 32


def tiny_config(**overrides):
    base = {
        "features.n_mels": N_MELS,
        "encoder.embedding_dim": 16,
        "encoder.head_hidden_dim": 32,
        "augment.n_views": 2,
        "train.epochs": 2,
        "train.batch_size": 3,
        "train.lr": 0.001,
        "train.restarts": 1,
        "train.crop_frames": 16,
        "loss.temperature": 0.2,
    }
    return Config().with_overrides({**base, **overrides})


def tiny_clips(n=6, frames=40, seed=0):
    """Clips with a per-clip spectral signature (learnable) and varying valid lengths."""
    rng = np.random.default_rng(seed)
    profile = rng.normal(0, 8, size=(n, N_MELS, 1))
    clips = (-50 + profile + rng.normal(0, 2, size=(n, N_MELS, frames))).astype(np.float32)
    lengths = rng.integers(12, frames + 1, size=n)
    lengths[0] = frames
    for i, length in enumerate(lengths):
        clips[i, :, length:] = -100.0  # padding like FeatureSet.padded
    mean = clips[:, :, :12].mean(axis=(0, 2))
    std = clips[:, :, :12].std(axis=(0, 2))
    return clips, lengths, mean, std


def run(cfg, data, labels=None, **kwargs):
    clips, lengths, mean, std = data
    data = TrainClips(clips, lengths, mean, std, labels)
    return train(cfg, data, device="cpu", progress=False, **kwargs)


def losses(history):
    return [(h["epoch"], h["loss"], h["lr"]) for h in history]


@pytest.fixture(scope="module")
def data():
    return tiny_clips()


@pytest.fixture(scope="module")
def full_run(data):
    """One uninterrupted 2-epoch run that several tests compare against."""
    reports = []
    result = run(
        tiny_config(), data, report=lambda e, m, enc: reports.append((e, dict(m), enc.training))
    )
    return result, reports


def test_loss_decreases_and_history_is_complete(full_run, data):
    result, reports = full_run
    assert isinstance(result, TrainResult) and result.epochs_run == 2
    assert [h["epoch"] for h in result.history] == [1, 2]
    for h in result.history:
        assert set(h) == {"epoch", "loss", "lr", "seconds", "samples_per_s"}
        assert h["samples_per_s"] > 0
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert not result.encoder.training
    torch.testing.assert_close(result.encoder.mel_mean, torch.as_tensor(data[2]), rtol=0, atol=0)
    # report: once per epoch, after the history entry, with the encoder in eval mode
    assert [(e, m) for e, m, _ in reports] == [(h["epoch"], h) for h in result.history]
    assert not any(training for _, _, training in reports)


def test_same_seed_same_history_other_seed_differs(full_run, data):
    one_epoch = tiny_config(**{"train.epochs": 1})
    a, b = run(one_epoch, data), run(one_epoch, data)
    assert losses(a.history) == losses(b.history)
    other = run(tiny_config(**{"train.epochs": 1, "train.seed": 1}), data)
    assert losses(other.history) != losses(a.history)


def test_resume_after_interruption_matches_uninterrupted(tmp_path, full_run, data):
    cfg, full = tiny_config(), full_run[0]

    def stop_after_first(epoch, metrics, encoder):
        if epoch == 1:
            raise KeyboardInterrupt("preempted")

    with pytest.raises(KeyboardInterrupt):
        run(cfg, data, checkpoint_dir=tmp_path, report=stop_after_first)
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # plain tensors and values
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert Config.from_json(state["config"]) == cfg
    assert not (tmp_path / "last.pt.tmp").exists()

    seen = []
    resumed = run(cfg, data, checkpoint_dir=tmp_path, report=lambda e, m, enc: seen.append(e))
    assert seen == [2] and resumed.epochs_run == 1
    assert losses(resumed.history) == losses(full.history)
    for k, v in full.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[k], v, rtol=0, atol=0)

    # a checkpoint of another config is refused, unless resume=False starts afresh
    other = tiny_config(**{"train.epochs": 1, "train.lr": 0.01})
    with pytest.raises(AsdError, match="train.lr"):
        run(other, data, checkpoint_dir=tmp_path)
    assert run(other, data, checkpoint_dir=tmp_path, resume=False).epochs_run == 1
    assert Config.from_json(torch.load(tmp_path / "last.pt", weights_only=True)["config"]) == other


def test_nan_loss_raises_naming_epoch_and_settings(tmp_path, monkeypatch, data):
    import asd.model.train as train_module

    calls = {"n": 0}
    real = train_module.nt_xent

    def nan_in_second_epoch(z, temperature):
        calls["n"] += 1
        loss = real(z, temperature)
        return loss * float("nan") if calls["n"] == 4 else loss  # 2 steps per epoch

    monkeypatch.setattr(train_module, "nt_xent", nan_in_second_epoch)
    cfg = tiny_config(**{"train.epochs": 2})
    with pytest.raises(AsdError, match=r"NaN at epoch 2, step 2 \(train.lr=0.001") as err:
        run(cfg, data, checkpoint_dir=tmp_path)
    assert "\n" not in str(err.value)
    # the epoch-1 checkpoint survives the failure
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_huge_lr_raises_asd_error(data):
    with pytest.raises(AsdError, match="at epoch 1.*train.lr=1e\\+30"):
        run(tiny_config(**{"train.lr": 1e30, "train.epochs": 1}), data)


@pytest.mark.parametrize(
    "epochs, restarts, n_steps", [(4, 3, 5), (3, 1, 3), (40, 3, 21), (5, 0, 2), (2, 3, 3)]
)
def test_schedule_has_restarts_plus_one_equal_cycles(epochs, restarts, n_steps):
    cfg = tiny_config(
        **{"train.epochs": epochs, "train.restarts": restarts, "train.lr": 0.5, "train.lr_min": 0.1}
    )
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    sched = make_scheduler(opt, cfg)
    total = epochs * n_steps
    cycle = total / (restarts + 1)  # steps per cycle, maybe fractional
    lrs = []
    for step in range(total):
        lrs.append(opt.param_groups[0]["lr"])  # the rate step `step` uses
        sched.step(schedule_time(step + 1, n_steps, cfg))
    expected = [
        0.1 + 0.4 * (1 + math.cos(math.pi * ((s % cycle) / cycle))) / 2 for s in range(total)
    ]
    assert lrs == pytest.approx(expected, abs=1e-9)
    rises = [i for i in range(1, total) if lrs[i] > lrs[i - 1]]
    assert len(rises) == restarts  # restarts + 1 cycles


def test_steps_per_epoch_drops_a_lone_clip():
    assert steps_per_epoch(12, 6) == 2
    assert steps_per_epoch(13, 6) == 2  # a batch of 1 has no negatives
    assert steps_per_epoch(14, 6) == 3
    assert steps_per_epoch(4, 6) == 1


def test_steps_per_epoch_data_parallel_drops_a_batch_some_worker_would_miss():
    assert steps_per_epoch(13, 6, world=2) == steps_per_epoch(13, 6) == 2  # same as one process
    assert steps_per_epoch(14, 6, world=2) == 3  # 2 clips left: one per worker
    assert steps_per_epoch(14, 6, world=3) == 2  # 2 clips cannot feed 3 workers
    assert steps_per_epoch(15, 6, world=3) == 3


def test_tiling_and_crops_stay_inside_valid_frames():
    clips = torch.arange(2 * 1 * 10, dtype=torch.float32).reshape(2, 1, 10)
    lengths = torch.tensor([3, 10])
    tiled = tile_short_clips(clips, lengths, 7)
    assert tiled[0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert tiled[1, 0].tolist() == clips[1, 0].tolist()
    g = torch.Generator().manual_seed(0)
    valid = lengths.clamp_min(7)
    for _ in range(20):
        crop = random_crops(tiled, valid, torch.tensor([0, 1, 1]), 7, g)
        assert crop.shape == (3, 1, 7)
        assert crop[0, 0, :3].tolist() in ([0, 1, 2], [1, 2, 0], [2, 0, 1])
        starts = crop[1:, 0, 0] - 10  # clip 1 holds 10..19
        assert (starts >= 0).all() and (starts <= 3).all()
        assert torch.equal(crop[1:, 0], crop[1:, 0, :1] + torch.arange(7))


def test_bad_inputs_raise():
    clips, lengths, mean, std = tiny_clips()
    cfg = tiny_config()
    with pytest.raises(AsdError, match="n_mels"):
        train(cfg, TrainClips(clips[:, :5], lengths, mean, std), device="cpu", progress=False)
    with pytest.raises(AsdError, match="at least 2 clips"):
        train(cfg, TrainClips(clips[:1], lengths[:1], mean, std), device="cpu", progress=False)


def test_steps_per_epoch_drop_last_keeps_one_batch_shape():
    assert steps_per_epoch(14, 6, drop_last=True) == 2  # the 2-clip batch would recompile
    assert steps_per_epoch(12, 6, drop_last=True) == 2
    assert steps_per_epoch(4, 6, drop_last=True) == 1  # fewer clips than a batch: one step


def test_compiled_training_matches_eager_within_bf16_tolerance(full_run, data):
    """torch.compile (aot_eager: the traced forward/backward graphs, no codegen) on CPU."""
    cfg = tiny_config(**{"train.compile": "on", "train.compile_backend": "aot_eager"})
    compiled = run(cfg, data)
    eager = full_run[0]
    assert [h["epoch"] for h in compiled.history] == [1, 2]
    for got, want in zip(compiled.history, eager.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-2)
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-6)
    for (name, got), want in zip(
        compiled.encoder.state_dict().items(), eager.encoder.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1.6e-2, atol=1e-2, msg=name)  # bf16 eps
    # the compiled encoder is the plain module (saved and embedded as usual)
    assert type(compiled.encoder).__name__ == "Encoder"


def test_compiled_training_never_recompiles_for_a_short_last_batch(monkeypatch):
    """8 clips in batches of 3: eager runs 3 steps (the last of 2 clips), compiled runs 2."""
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    data = tiny_clips(n=8)
    cfg = tiny_config(
        **{"train.compile": "on", "train.compile_backend": "eager", "train.epochs": 2}
    )
    torch._dynamo.reset()
    result = run(cfg, data)
    assert result.epochs_run == 2  # a recompile (new batch shape, or eval/train) would raise
    batch_samples = 3 * (1 + cfg.augment.n_views)
    first = result.history[0]
    assert first["samples_per_s"] * first["seconds"] == pytest.approx(2 * batch_samples)


def test_bad_compile_setting_names_it(data):
    with pytest.raises(AsdError, match="train.compile"):
        run(tiny_config(**{"train.compile": "yes"}), data)


def tiny_labels(n=6):
    from asd.model.margin import ClassLabels

    return ClassLabels(np.arange(n, dtype=np.int64) % 2, ("even", "odd"))


def test_class_labels_change_nothing_while_aux_weight_is_zero(full_run, data):
    """The paper stays exactly reproducible: labels alone add no parameter and no draw."""
    with_labels = run(tiny_config(), data, labels=tiny_labels())
    assert losses(with_labels.history) == losses(full_run[0].history)
    for k, v in full_run[0].encoder.state_dict().items():
        torch.testing.assert_close(with_labels.encoder.state_dict()[k], v, rtol=0, atol=0)
    assert with_labels.encoder.classes == ()


@pytest.mark.parametrize("head", ["arcface", "adacos"])
def test_aux_head_trains_resumes_and_names_its_classes(tmp_path, data, head):
    cfg = tiny_config(**{"loss.aux_weight": 1.0, "loss.aux_head": head, "encoder.width": 8})
    full = run(cfg, data, labels=tiny_labels())
    assert full.encoder.classes == ("even", "odd")
    assert all(math.isfinite(h["aux_loss"]) for h in full.history)

    def stop_after_first(epoch, metrics, encoder):
        if epoch == 1:
            raise KeyboardInterrupt("preempted")

    with pytest.raises(KeyboardInterrupt):
        run(cfg, data, labels=tiny_labels(), checkpoint_dir=tmp_path, report=stop_after_first)
    assert "centres" in torch.load(tmp_path / "last.pt", weights_only=True)["head"]
    resumed = run(cfg, data, labels=tiny_labels(), checkpoint_dir=tmp_path)
    assert [h["aux_loss"] for h in resumed.history] == [h["aux_loss"] for h in full.history]
    assert losses(resumed.history) == losses(full.history)
    with pytest.raises(AsdError, match="needs class labels"):
        run(cfg, data)


def test_checkpoint_every_writes_only_the_due_epochs_and_the_last(tmp_path, data):
    saved = []

    def report(epoch, metrics, encoder):
        path = tmp_path / "last.pt"
        saved.append(torch.load(path, weights_only=True)["epoch"] if path.exists() else None)

    cfg = tiny_config(**{"train.epochs": 5})
    run(cfg, data, checkpoint_dir=tmp_path, report=report, checkpoint_every=2)
    assert saved == [None, 2, 2, 4, 5]
    resumed = run(cfg, data, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert resumed.epochs_run == 0  # the last epoch's checkpoint is complete
