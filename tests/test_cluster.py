"""The shared-work-folder probe, run through Ray on every node (one node here)."""

from pathlib import Path

import pytest

from asd.errors import AsdError
from asd.sweep.cluster import TOKEN_FILE, check_shared_workdir, probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    return ray


def _cache(root: Path) -> Path:
    cache = root / "features" / "abc"
    cache.mkdir(parents=True)
    (cache / "meta.json").write_text("{}")
    (cache / "mel.npy").write_bytes(b"\x93NUMPY")
    return cache


def test_every_node_reads_the_driver_cache(ray_local, tmp_path):
    cache = _cache(tmp_path)
    assert check_shared_workdir(tmp_path, str(cache), cpus=1, gpus=0) == 1
    assert (tmp_path / TOKEN_FILE).read_text()


def test_a_node_without_the_cache_refuses_in_one_line(ray_local, tmp_path):
    with pytest.raises(AsdError) as caught:
        check_shared_workdir(tmp_path, str(tmp_path / "features" / "gone"), cpus=1, gpus=0)
    message = str(caught.value)
    assert "cannot read the feature cache" in message and "same path" in message
    assert "\n" not in message


def test_a_node_that_sees_another_folder_is_named(tmp_path):
    """Same path, different storage (e.g. a per-host volume): the driver's token is missing."""
    cache = _cache(tmp_path)
    (tmp_path / TOKEN_FILE).write_text("a token from another sweep")
    answer = probe(str(tmp_path), str(cache), token="this sweep's token")
    assert answer is not None and "does not see the driver's work folder" in answer


def test_nodes_too_small_for_a_trial_are_not_probed(ray_local, tmp_path):
    cache = _cache(tmp_path)
    assert check_shared_workdir(tmp_path, str(cache), cpus=1, gpus=1) == 0
