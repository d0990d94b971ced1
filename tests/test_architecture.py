"""The package's shape: imports point down the layers, no cycles, small files, no reaching in.

Layers, top to bottom: commands (``cli``, ``__main__``, ``commands/``) -> ``server`` ->
``completion`` -> ``engine`` -> ``codegen``. Every import counts, at module level or inside a
function or an ``if TYPE_CHECKING:`` block: a cycle hidden behind a lazy import is still a
cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "codegen_lsp"
# native: the C kernels and their build (standard library only), beside codegen at the bottom
LAYERS = {"native": 0, "codegen": 0, "engine": 1, "completion": 2, "server": 3, "commands": 4}
TOP = {"cli", "__main__"}  # modules at the package root that are commands
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports (any kind of import, anywhere in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(name: str) -> int | None:
    """The layer of a module; None for the package root's shared modules (version)."""
    parts = name.split(".")
    if len(parts) == 1:
        return None
    if parts[1] in TOP:
        return LAYERS["commands"]
    return LAYERS.get(parts[1])


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, name, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            a, b = layer(source), layer(target)
            if a is not None and b is not None and b > a:
                bad.append(f"{source} -> {target}")
    return bad


def test_the_checker_sees_cycles_and_upward_imports() -> None:
    edges = {"codegen_lsp.engine.a": {"codegen_lsp.engine.b"}, "codegen_lsp.engine.b": set()}
    assert cycles(edges) == []
    edges["codegen_lsp.engine.b"].add("codegen_lsp.engine.a")
    edges["codegen_lsp.codegen.x"] = {"codegen_lsp.server.y"}
    assert cycles(edges) == [["codegen_lsp.engine.a", "codegen_lsp.engine.b"]]
    assert upward(edges) == ["codegen_lsp.codegen.x -> codegen_lsp.server.y"]


def test_relative_and_lazy_imports_are_seen(tmp_path: Path) -> None:
    source = "def f():\n    from codegen_lsp.server import convert\n"
    file = PACKAGE / "engine" / "x.py"  # only its name is used
    tmp = tmp_path / "x.py"
    tmp.write_text(source + "if TYPE_CHECKING:\n    from ..completion.core import Completer\n")
    known = {"codegen_lsp.server.convert", "codegen_lsp.completion.core"}
    found = imports_of(tmp, module_name(file), known)
    assert found == known


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_imports_point_down_the_layers() -> None:
    edges = graph()
    assert all(layer(m) is not None for m in edges if m.count(".") and "default_model" not in m)
    assert upward(edges) == []


def test_files_are_small() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_getattr_on_an_engine_outside_the_engine() -> None:
    pattern = re.compile(r"getattr\(\s*[\w.]*engine")
    found = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.parent.name != "engine" and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert found == []
