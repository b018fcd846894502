"""Print asd's import graph as a mermaid diagram, and check its layers (docs/ARCHITECTURE.md).

Run from the repository root: ``python docs/import_graph.py``. Solid arrows are imports at
module top, dotted ones imports inside a function (kept lazy); imports under
``if TYPE_CHECKING:`` are annotations only and are left out. The packages are the stages of
the data flow, each a layer that may import only the layers below it (:data:`LAYERS`). Exits 1
on an upward arrow (a lower layer importing a higher one) or a circle of top-level imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = (
    ("base", ("asd", "errors", "pooling_spec", "config", "presets", "progress", "staging")),
    ("data", ("data",)),
    ("features", ("features",)),
    ("model", ("model",)),
    ("detect", ("detect",)),
    ("tracking", ("tracking",)),
    ("serve", ("serve",)),
    ("sweep", ("sweep",)),
    ("app", ("cli", "commands", "runfolder")),
)
"""Layers from the bottom up, by the first part of a module's path under ``asd/``."""
RANK = {top: i for i, (_, tops) in enumerate(LAYERS) for top in tops}


def module_name(path: Path, root: Path) -> str:
    """``asd/sweep/runner.py`` -> ``asd.sweep.runner``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "asd"


def imports(tree: ast.Module, modules: set[str]) -> list[tuple[str, bool]]:
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
                    found.append((sub if sub in modules else mod, inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.startswith("asd"))
            visit(child, inner)

    visit(tree, False)
    return found


def label(name: str) -> str:
    """A short label: ``sweep/runner`` for ``asd.sweep.runner``."""
    return name.removeprefix("asd.").replace(".", "/") if name != "asd" else "asd"


def rank(name: str) -> int:
    """The layer of a module (a module outside every layer is an error)."""
    top = label(name).split("/")[0]
    if top not in RANK:
        raise SystemExit(f"asd/{label(name)}: in no layer of docs/import_graph.py LAYERS")
    return RANK[top]


def circles(edges: dict[tuple[str, str], bool]) -> list[list[str]]:
    """Cycles among top-level (not lazy) imports, each as the modules around it."""
    graph: dict[str, list[str]] = {}
    for (src, dst), lazy in edges.items():
        if not lazy:
            graph.setdefault(src, []).append(dst)
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def module_map(files: list[Path]) -> str:
    """The module map: every module's first docstring line, by layer (``--map``)."""
    lines = ["| layer | module | what it is |", "|---|---|---|"]
    for name, tops in LAYERS:
        first = True
        for path in files:
            mod = module_name(path, Path("."))
            if label(mod).split("/")[0] not in tops or mod == "asd":
                continue
            doc = (ast.get_docstring(ast.parse(path.read_text())) or "").split("\n")[0]
            lines.append(f"| {name if first else ''} | `{path.as_posix()}` | {doc} |")
            first = False
    return "\n".join(lines)


MAX_LINES = 500
"""No module is longer: a longer one holds two concepts (split it by concept, not by a cap)."""
DOC = Path("docs/ARCHITECTURE.md")
MAP_FENCE = ("<!-- module-map: python docs/import_graph.py --write -->", "<!-- /module-map -->")
GRAPH_FENCE = (
    "<!-- import-graph: python docs/import_graph.py --write -->",
    "<!-- /import-graph -->",
)


def graph(files: list[Path], modules: set[str]) -> tuple[str, list[str]]:
    """The mermaid flowchart and the problems: upward arrows and circles of imports."""
    edges: dict[tuple[str, str], bool] = {}
    for path in files:
        src = module_name(path, Path("."))
        for dst, lazy in imports(ast.parse(path.read_text()), modules):
            if dst != src and dst in modules and not src.startswith(dst + "."):
                key = (src, dst)
                edges[key] = edges.get(key, True) and lazy
    lines = ["flowchart LR"]
    for name, tops in LAYERS:
        lines.append(f"  subgraph layer_{name} [{name}]")
        for mod in sorted(m for m in modules if label(m).split("/")[0] in tops and m != "asd"):
            lines.append(f"    {label(mod).replace('/', '_')}[{label(mod)}]")
        lines.append("  end")
    for (src, dst), lazy in sorted(edges.items()):
        if dst == "asd":  # `from asd import __version__`
            continue
        arrow = "-.->" if lazy else "-->"
        lines.append(f"  {label(src).replace('/', '_')} {arrow} {label(dst).replace('/', '_')}")
    upward = [f"{label(s)} -> {label(d)}" for (s, d) in edges if rank(d) > rank(s)]
    problems = []
    if upward:
        problems.append("upward imports (a layer importing a higher one): " + ", ".join(upward))
    problems += ["circle of imports: " + " -> ".join(label(m) for m in c) for c in circles(edges)]
    return "\n".join(lines), problems


def too_long(files: list[Path]) -> list[str]:
    """Modules over :data:`MAX_LINES` lines."""
    counts = {p: len(p.read_text().splitlines()) for p in files}
    return [f"{p.as_posix()}: {n} lines (at most {MAX_LINES})" for p, n in counts.items()
            if n > MAX_LINES]  # fmt: skip


def fenced(text: str, fence: tuple[str, str], body: str) -> str:
    """``text`` with what stands between ``fence``'s two markers replaced by ``body``."""
    begin, end = fence
    if begin not in text or end not in text:
        raise SystemExit(f"{DOC}: markers {begin!r} and {end!r} are missing")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"


def document(text: str, files: list[Path], modules: set[str]) -> str:
    """ARCHITECTURE.md with its module map and import graph drawn from the code."""
    text = fenced(text, MAP_FENCE, module_map(files))
    return fenced(text, GRAPH_FENCE, "```mermaid\n" + graph(files, modules)[0] + "\n```")


def main() -> int:
    """Print the graph (``--map``: the module map; ``--write``: refresh docs/ARCHITECTURE.md).

    Exits 1 on an upward arrow, a circle, a module over :data:`MAX_LINES` lines, or (unless
    ``--write``) an ARCHITECTURE.md whose map or graph is not the code's.
    """
    files = sorted(Path("asd").rglob("*.py"))
    modules = {module_name(p, Path(".")) for p in files}
    if "--map" in sys.argv:
        print(module_map(files))
        return 0
    drawn, problems = graph(files, modules)
    problems += too_long(files)
    current = DOC.read_text()
    if "--write" in sys.argv:
        DOC.write_text(document(current, files, modules))
    elif document(current, files, modules) != current:
        problems.append(f"{DOC}: module map or import graph stale (run with --write)")
    print(drawn)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
