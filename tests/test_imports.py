"""The import graph: the CLI starts without the platform stack; the core never imports upward."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded(module: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of ``heavy`` a fresh interpreter has loaded after ``import module``."""
    code = f"import sys, {module}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    return [m for m in out.split(",") if m]


def test_cli_imports_no_ray_mlflow_optuna_or_matplotlib():
    assert _loaded("asd.cli.main", ("ray", "mlflow", "optuna", "matplotlib")) == []


@pytest.mark.parametrize(
    "module", ["asd.sweep.runner", "asd.sweep.trial", "asd.sweep.epochs", "asd.sweep.summary"]
)
def test_sweep_modules_import_without_ray(module):
    # the driver imports them before Ray is initialised; Ray comes in where it is used
    assert _loaded(module, ("ray", "optuna")) == []


def test_core_modules_import_no_upper_layer():
    done = subprocess.run(
        [sys.executable, "docs/import_graph.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "flowchart LR" in done.stdout and "sweep_runner --> sweep_trial" in done.stdout
