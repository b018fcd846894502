"""Print asd's import graph as a mermaid diagram (used for docs/ARCHITECTURE.md).

Run from the repository root: ``python docs/import_graph.py``. Solid arrows are imports at
module top, dotted ones imports inside a function (kept lazy); imports under
``if TYPE_CHECKING:`` are annotations only and are left out. Exits 1 if a core module
imports the sweep, tracking, registry, serve or CLI layers.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

UPPER = ("sweep", "tracking", "registry", "serve", "cli", "commands")
"""The platform layers and entry points; every other module of ``asd`` is core."""


def module_name(path: Path, root: Path) -> str:
    """``asd/sweep/runner.py`` -> ``asd.sweep.runner``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "asd"


def imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(imported asd module, lazy?) for every import outside ``if TYPE_CHECKING``."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("asd"):
                mod = child.module or ""
                for alias in child.names:  # `from asd import __version__` stays `asd`
                    sub = f"{mod}.{alias.name}"
                    found.append((sub if sub in MODULES else mod, inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.startswith("asd"))
            visit(child, inner)

    visit(tree, False)
    return found


def node(name: str) -> str:
    """A short label: ``sweep/runner`` for ``asd.sweep.runner``."""
    return name.removeprefix("asd.").replace(".", "/") if name != "asd" else "asd"


root = Path("asd")
FILES = sorted(root.rglob("*.py"))
MODULES = {module_name(p, root.parent) for p in FILES}
edges: dict[tuple[str, str], bool] = {}
for path in FILES:
    src = module_name(path, root.parent)
    for dst, lazy in imports(ast.parse(path.read_text())):
        if dst != src and dst in MODULES and not src.startswith(dst + "."):
            key = (node(src), node(dst))
            edges[key] = edges.get(key, True) and lazy

groups = {"core": [], "sweep": [], "tracking": [], "app": []}
for name in sorted(MODULES):
    label = node(name)
    if label == "asd":
        continue
    top = label.split("/")[0]
    groups[top if top in ("sweep", "tracking") else "app" if top in UPPER else "core"].append(label)

print("flowchart LR")
for group, labels in groups.items():
    print(f"  subgraph layer_{group} [{group}]")
    for label in labels:
        shown = f"{label}/__init__" if label in ("sweep", "tracking") else label
        print(f"    {label.replace('/', '_')}[{shown}]")
    print("  end")
for (src, dst), lazy in sorted(edges.items()):
    if dst == "asd":  # `from asd import __version__`
        continue
    arrow = "-.->" if lazy else "-->"
    print(f"  {src.replace('/', '_')} {arrow} {dst.replace('/', '_')}")

upward = [
    f"{s} -> {d}" for (s, d), _ in edges.items()
    if s.split("/")[0] not in UPPER and d.split("/")[0] in UPPER
]  # fmt: skip
if upward:
    print("core modules import upper layers: " + ", ".join(upward), file=sys.stderr)
    sys.exit(1)
