import pytest
import torch

from asd.config import Config
from asd.errors import AsdError
from asd.model.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from asd.model.encoder import Encoder
from asd.model.schedule import make_scheduler


def _state(cfg):
    encoder = Encoder(cfg.encoder, cfg.features.n_mels)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=cfg.train.lr)
    generator = torch.Generator().manual_seed(3)
    return encoder, optimizer, make_scheduler(optimizer, cfg), generator


def test_a_saved_checkpoint_loads_back_with_its_epoch_history_and_stream(tmp_path):
    cfg = Config().with_overrides({"encoder.width": 8, "features.n_mels": 32})
    encoder, optimizer, scheduler, generator = _state(cfg)
    path = tmp_path / "run" / CHECKPOINT_NAME
    save_checkpoint(path, encoder, optimizer, scheduler, generator, 2, [{"loss": 1.5}], cfg)
    assert path.is_file() and not path.with_name(path.name + ".tmp").exists()
    state = load_checkpoint(path, cfg, torch.device("cpu"))
    assert state["epoch"] == 2 and state["history"] == [{"loss": 1.5}]
    assert torch.equal(state["generator"], generator.get_state())
    assert "head" not in state


def test_a_checkpoint_of_another_config_is_refused_naming_the_setting(tmp_path):
    cfg = Config().with_overrides({"encoder.width": 8, "features.n_mels": 32})
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, *_state(cfg), 1, [], cfg)
    other = cfg.with_overrides({"train.lr": cfg.train.lr * 2})
    with pytest.raises(AsdError, match=r"another config \(differs in train.lr\)"):
        load_checkpoint(path, other, torch.device("cpu"))
