import os

import pytest
import torch

from asd.errors import AsdError
from asd.model.compilation import COMPILE_CACHE_ENV, compile_enabled, use_compile_cache


def test_auto_compiles_on_cuda_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert (compile_enabled("auto", cpu), compile_enabled("auto", cuda)) == (False, True)
    assert compile_enabled("on", cpu) and compile_enabled("on", cuda)
    assert not compile_enabled("off", cuda)
    with pytest.raises(AsdError, match="train.compile"):
        compile_enabled("true", cpu)


def test_compile_cache_folder_is_where_inductor_looks(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.setenv(COMPILE_CACHE_ENV, "")  # recorded, so the teardown puts back the value
    monkeypatch.delenv(COMPILE_CACHE_ENV)  # before, or removes it if there was none
    folder = use_compile_cache(tmp_path / "work" / "compile-cache")
    assert folder.is_dir() and os.environ[COMPILE_CACHE_ENV] == str(folder)
    assert cache_dir() == str(folder)  # inductor reads it at each compile
