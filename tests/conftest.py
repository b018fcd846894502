"""Fixtures shared by the test modules: tiny DCASE trees, tiny search spaces, tiny encoders.

Real server processes start from ``tests/servers.py``; the fault hooks that sweeps load into
Ray workers live in ``tests/faults.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # before anything imports MLflow

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from asd.config import Config  # noqa: E402
from asd.data.synth.tree import synthesize  # noqa: E402
from asd.model.encoder import Encoder, save_encoder  # noqa: E402

TINY_SPACE = """\
description: a sweep small enough for a test
base: smoke
fixed:
  train.epochs: {epochs}
  train.batch_size: 6
  train.crop_frames: 16
  features.n_mels: 32
  augment.n_views: 2
{fixed}params:
{params}
sweep:
  num_samples: {num_samples}
  max_concurrent_trials: {concurrent}
  grace_period: {epochs}
"""


TINY_TREE = {"machines": ("fan", "slider"), "train_target": 2, "test_per_domain": 2, "seconds": 1.0}
"""What :func:`synth_tree` passes to ``synthesize`` unless a test says otherwise."""


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory) -> Callable[..., Path]:
    """``synth_tree(**synthesize_args) -> root``: a tiny synthetic DCASE tree in a new folder.

    Arguments not given come from :data:`TINY_TREE`; treat the tree as read-only (copy it
    to damage it).
    """

    def make(**kwargs: Any) -> Path:
        return synthesize(tmp_path_factory.mktemp("dcase"), **{**TINY_TREE, **kwargs})

    return make


@pytest.fixture
def writable_copy(tmp_path) -> Callable[[Path], Path]:
    """``writable_copy(root) -> copy``: a fresh copy of a shared tree that this test may damage."""
    return lambda root: Path(shutil.copytree(root, tmp_path / "data"))


@pytest.fixture(scope="session")
def tiny_space() -> Callable[..., Path]:
    """``tiny_space(path, params, num_samples, epochs=2, concurrent=2, fixed=None) -> path``.

    A search space on the smoke preset, shrunk so a trial takes seconds; ``params`` maps a
    dotted key to its YAML distribution, e.g. ``{"train.lr": "{choice: [0.001]}"}``, and
    ``fixed`` adds fixed keys, e.g. ``{"encoder.width": 8}`` for a network 64 times cheaper.
    """

    def write(
        path: Path,
        params: dict[str, str],
        num_samples: int,
        epochs: int = 2,
        concurrent: int = 2,
        fixed: dict[str, Any] | None = None,
    ) -> Path:
        lines = "\n".join(f"  {key}: {value}" for key, value in params.items())
        extra = "".join(f"  {key}: {value}\n" for key, value in (fixed or {}).items())
        text = TINY_SPACE.format(
            epochs=epochs, params=lines, num_samples=num_samples, concurrent=concurrent, fixed=extra
        )
        path.write_text(text)
        return path

    return write


SHIPPED_SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
"""The search spaces the package ships (``asd sweep --space <name>``)."""

SMALL_FIXED = {
    "train.epochs": 1,
    "train.batch_size": 6,
    "train.crop_frames": 16,
    "features.n_mels": 32,
    "encoder.width": 8,
    "augment.n_views": 2,
}
"""Sizes every shrunk space runs at, unless it searches the key (then :data:`SMALL_PARAMS`)."""

SMALL_PARAMS = {
    "train.epochs": {"choice": [1]},
    "train.batch_size": {"choice": [4, 6]},
    "train.crop_frames": {"choice": [16]},
    "features.n_mels": {"choice": [32]},
    "encoder.width": {"choice": [8, 16]},
    "augment.n_views": {"int": [2, 3]},
}
"""Searched sizes, narrowed: the key stays searched, over small values only."""


def shrink_space(raw: dict[str, Any], num_samples: int = 2) -> dict[str, Any]:
    """A shipped space with the same base and searched keys, sized for seconds per trial.

    Sizes (epochs, batch, crop, mels, width, views) shrink; every other searched range is kept
    as shipped, so each trial still samples the detector families, poolings and scorers the
    space searches. Run defaults ask for at most ``num_samples`` one-epoch trials on CPUs.
    """
    params = {key: SMALL_PARAMS.get(key, spec) for key, spec in (raw.get("params") or {}).items()}
    fixed = {**(raw.get("fixed") or {}), **SMALL_FIXED}
    sweep = {
        key: value
        for key, value in (raw.get("sweep") or {}).items()
        if key not in ("cpus_per_trial", "gpus_per_trial", "workers_per_trial")
    }
    sweep["num_samples"] = min(num_samples, int(sweep.get("num_samples", num_samples)))
    sweep.update(max_concurrent_trials=2, grace_period=1)
    return {**raw, "fixed": fixed, "params": params, "sweep": sweep}


@pytest.fixture
def shrunk_space(tmp_path) -> Callable[..., Path]:
    """``shrunk_space(name, num_samples=2) -> path``: a shipped space, by :func:`shrink_space`."""

    def write(name: str, num_samples: int = 2) -> Path:
        raw = yaml.safe_load((SHIPPED_SPACES / f"{name}.yaml").read_text())
        path = tmp_path / f"{name}-shrunk.yaml"
        path.write_text(yaml.safe_dump(shrink_space(raw, num_samples), sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_encoder_file() -> Callable[..., Path]:
    """``tiny_encoder_file(path, n_mels=16, ...) -> path``: a small untrained encoder, saved.

    Seeded, with an 8-d embedding, so two calls with the same arguments write the same weights.
    """

    def make(
        path: Path,
        n_mels: int = 16,
        embed_from: str = "backbone",
        normalization: tuple[float, float] = (0.0, 1.0),
        extra: dict[str, Any] | None = None,
    ) -> Path:
        cfg = Config().with_overrides(
            {
                "encoder.embedding_dim": 8,
                "encoder.head_hidden_dim": 16,
                "encoder.embed_from": embed_from,
                "features.n_mels": n_mels,
            }
        )
        torch.manual_seed(0)
        encoder = Encoder(cfg.encoder, n_mels)
        mean, std = normalization
        encoder.set_normalization(np.full(n_mels, mean), np.full(n_mels, std))
        return save_encoder(encoder, path, cfg, extra or {"data_fingerprint": "x"})

    return make


def _process_state() -> dict[str, Any]:
    """What a test module must give back as it found it: state the whole process shares.

    A module that leaves ``MLFLOW_TRACKING_URI`` in the environment (``mlflow.set_tracking_uri``
    writes it) sends every later sweep subprocess's logging to ``./mlflow.db``; a changed cwd,
    thread count or default dtype changes what later modules compute.
    """
    state: dict[str, Any] = {
        "os.environ": dict(os.environ),
        "cwd": os.getcwd(),
        "torch.get_num_threads()": torch.get_num_threads(),
        "torch.get_default_dtype()": torch.get_default_dtype(),
    }
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    # The module globals, not the resolved URIs: those read the environment, compared above.
    state["mlflow tracking URI"] = getattr(tracking, "_tracking_uri", None)
    state["mlflow registry URI"] = getattr(registry, "_registry_uri", None)
    return state


RAY_INIT_WRITES = ("PYTHONBREAKPOINT", "RAY_CLIENT_MODE", "RAY_USAGE_STATS_ENABLED")
"""Variables ``ray.init`` writes into the driver's environment and ``ray.shutdown`` leaves."""

IMPORT_WRITES = {
    "KMP_DUPLICATE_LIB_OK": "True",  # sklearn, threadpoolctl
    "KMP_INIT_AT_FORK": "FALSE",  # sklearn, joblib
    "CRC32C_SW_MODE": "auto",  # tensorboardX, imported by Ray Tune
}
"""Variables libraries set when first imported (a module importing lazily is not to blame)."""


def _forget_library_writes(before: dict[str, Any]) -> None:
    """Undo what libraries write into the environment on their own first use, not a test.

    Import-time defaults (:data:`IMPORT_WRITES`), ``ray.init``'s variables (the guard has
    just shut Ray down) and torch inductor's default cache folder (``cache_dir()`` sets it
    when unset). Any other value of those is a test's.
    """
    env = before["os.environ"]
    for name, value in IMPORT_WRITES.items():
        if name not in env and os.environ.get(name) == value:
            del os.environ[name]
    if "ray" in sys.modules:
        for name in RAY_INIT_WRITES:
            if name not in env:
                os.environ.pop(name, None)
    inductor = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
    cache = "TORCHINDUCTOR_CACHE_DIR"
    if inductor is not None and cache not in env:
        if os.environ.get(cache) == inductor.default_cache_dir():
            del os.environ[cache]


def _restore(state: dict[str, Any]) -> None:
    """Put back what :func:`_process_state` recorded, so one offender fails only itself."""
    current = os.environ.get("PYTEST_CURRENT_TEST")
    os.environ.clear()
    os.environ.update(state["os.environ"])
    if current is not None:
        os.environ["PYTEST_CURRENT_TEST"] = current
    os.chdir(state["cwd"])
    torch.set_num_threads(state["torch.get_num_threads()"])
    torch.set_default_dtype(state["torch.get_default_dtype()"])
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if tracking is not None:
        tracking._tracking_uri = state["mlflow tracking URI"]
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    if registry is not None:
        registry._registry_uri = state["mlflow registry URI"]


def _state_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per changed item; environment variables named one by one."""
    changes = []
    env_before, env_after = before["os.environ"], after["os.environ"]
    for name in sorted((set(env_before) | set(env_after)) - {"PYTEST_CURRENT_TEST"}):
        old, new = env_before.get(name), env_after.get(name)
        if old != new:
            changes.append(f"os.environ[{name!r}]: {old!r} -> {new!r}")
    for key in before:
        if key != "os.environ" and before[key] != after[key]:
            changes.append(f"{key}: {before[key]!r} -> {after[key]!r}")
    return changes


@pytest.fixture(scope="module", autouse=True)
def process_state_given_back(request) -> Iterator[None]:
    """Fail the module that leaves process-wide state changed (then restore it).

    Later modules, and the sweep subprocesses they start, inherit the environment, the cwd,
    MLflow's global URIs and torch's thread count and dtype; a test that changes one must use
    ``monkeypatch`` or restore it without writing the environment.
    """
    before = _process_state()
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    _forget_library_writes(before)
    changes = _state_changes(before, _process_state())
    if changes:
        _restore(before)
        listed = "\n  ".join(changes)
        module = request.module.__name__
        pytest.fail(f"{module} left process-wide state changed:\n  {listed}", pytrace=False)


@pytest.fixture(scope="module")
def cli_environment() -> Iterator[None]:
    """The environment put back after a module that runs ``asd`` commands in this process.

    The CLI sets its defaults (``set_local_defaults``, ``quiet_platform_logs``) in the process
    environment on purpose, for the Ray workers it starts; a test must not hand them on.
    """
    saved = dict(os.environ)
    yield
    for name in set(os.environ) - set(saved) - {"PYTEST_CURRENT_TEST"}:
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_running() -> Iterator[None]:
    """Each module starts from no Ray: a sweep leaves its in-process Ray up, and a later
    module that asserts 'no Ray started' (or starts Ray with its own environment) would
    otherwise depend on which modules ran before it."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
