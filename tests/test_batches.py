"""Training clips on the device (asd/model/batches.py): the record, the checks, tiling, crops."""

import numpy as np
import pytest
import torch

from asd.config import Config
from asd.errors import AsdError
from asd.model.batches import TrainClips, random_crops, resident_clips, tile_short_clips

N_MELS = 4
CFG = Config().with_overrides(
    {"features.n_mels": N_MELS, "train.crop_frames": 8, "train.batch_size": 4}
)


def clips(n=3, frames=12, lengths=(12, 10, 5)):
    x = np.arange(n * N_MELS * frames, dtype=np.float32).reshape(n, N_MELS, frames)
    return TrainClips(x, np.array(lengths), np.zeros(N_MELS), np.ones(N_MELS))


def test_numpy_and_tensors_give_the_same_resident_clips():
    data = clips()
    as_tensors = TrainClips(*(torch.as_tensor(np.asarray(a)) for a in
                              (data.clips, data.lengths, data.mean, data.std)))  # fmt: skip
    a, valid_a = resident_clips(data, CFG, torch.device("cpu"), world=1)
    b, valid_b = resident_clips(as_tensors, CFG, torch.device("cpu"), world=1)
    assert torch.equal(a, b) and torch.equal(valid_a, valid_b)
    assert a.dtype == torch.float32 and a.shape == (3, N_MELS, 12)
    assert valid_a.tolist() == [12, 10, 8]  # a short clip is tiled up to one crop


def test_a_short_clip_is_tiled_from_its_own_valid_frames():
    data = clips()
    resident, _ = resident_clips(data, CFG, torch.device("cpu"), world=1)
    short = torch.as_tensor(data.clips[2])
    expected = short[:, torch.arange(12) % 5]  # (n_mels, 12): frames 0..4 repeated
    assert torch.equal(resident[2], expected)
    direct = tile_short_clips(torch.as_tensor(data.clips), torch.tensor([12, 10, 5]), 8)
    assert torch.equal(direct, resident)


def test_crops_stay_inside_the_valid_frames():
    resident, valid = resident_clips(clips(), CFG, torch.device("cpu"), world=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        crop = random_crops(resident, valid, torch.tensor([0, 1, 2]), 8, g)  # (3, n_mels, 8)
        assert crop.shape == (3, N_MELS, 8)
        start = (crop[:, 0, 0] - resident[:, 0, 0]).long()  # frame values count up by one
        assert (start[:2] >= 0).all() and (start[:2] + 8 <= valid[:2]).all()


@pytest.mark.parametrize(
    "data, message",
    [
        (TrainClips(np.zeros((3, 5, 12)), np.full(3, 12), np.zeros(5), np.ones(5)), "n_mels"),
        (TrainClips(np.zeros((1, N_MELS, 12)), np.full(1, 12), np.zeros(4), np.ones(4)),
         "at least 2 clips"),
        (TrainClips(np.zeros((3, N_MELS, 12)), np.full(2, 12), np.zeros(4), np.ones(4)),
         "one length each"),
        (TrainClips(np.zeros((3, N_MELS, 12)), np.array([12, 13, 5]), np.zeros(4), np.ones(4)),
         "between 1 and the padded"),
    ],
)  # fmt: skip
def test_bad_clips_are_refused_naming_why(data, message):
    with pytest.raises(AsdError, match=message):
        resident_clips(data, CFG, torch.device("cpu"), world=1)


def test_too_few_clips_per_step_for_the_workers_is_refused():
    with pytest.raises(AsdError, match="cannot feed 4 data-parallel workers"):
        resident_clips(clips(), CFG, torch.device("cpu"), world=4)


def test_the_record_is_frozen():
    data = clips()
    with pytest.raises(AttributeError):
        data.labels = None  # type: ignore[misc]
