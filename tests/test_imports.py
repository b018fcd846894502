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


def _checker():
    """docs/import_graph.py loaded as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "docs" / "import_graph.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_module_over_the_line_limit_is_named(tmp_path):
    checker = _checker()
    long, short = tmp_path / "long.py", tmp_path / "short.py"
    long.write_text("x = 1\n" * (checker.MAX_LINES + 1))
    short.write_text("x = 1\n" * checker.MAX_LINES)
    assert checker.too_long([long, short]) == [f"{long.as_posix()}: 501 lines (at most 500)"]


def test_architecture_doc_map_and_graph_are_redrawn_between_their_markers():
    checker = _checker()
    begin, end = checker.MAP_FENCE
    doc = f"intro\n{begin}\n| stale | map |\n{end}\nafter\n"
    redrawn = checker.fenced(doc, checker.MAP_FENCE, "| new |")
    assert redrawn == f"intro\n{begin}\n| new |\n{end}\nafter\n"
    with pytest.raises(SystemExit, match="markers"):
        checker.fenced("no markers here", checker.GRAPH_FENCE, "x")


def test_architecture_doc_shows_the_code_as_it_is():
    # the module map and graph in docs/ARCHITECTURE.md are what the code draws today
    done = subprocess.run(
        [sys.executable, "docs/import_graph.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert "stale" not in done.stderr, done.stderr
