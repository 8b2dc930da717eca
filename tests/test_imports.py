"""No module of pagelens imports a module that imports it back.

The graph is read from the source (ast), so it counts every import: at the top of
a module, inside a function (a deferred import only hides a cycle until the call),
and under ``if TYPE_CHECKING:`` (a type-only cycle is still two modules that each
need the other to be understood).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``package`` (a folder)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` lies in: itself, else its longest dotted prefix that is one."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that module ``name`` imports, anywhere in its source."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(filter(None, (_known(a.name, modules) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from its package, up level - 1
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.update(filter(None, [_known(base, modules)]))
            # `from pagelens.serve import app` imports the module pagelens.serve.app
            out.update(filter(None, (_known(f"{base}.{a.name}", modules) for a in node.names)))
    # a module's own packages run first whoever imports it: not an edge of its own
    return {m for m in out if m != name and not name.startswith(m + ".")}


def import_cycles(package: Path) -> list[list[str]]:
    """Groups of modules that reach each other by imports (Tarjan's components > 1)."""
    modules = _modules(package)
    graph = {name: sorted(_imported(name, path, modules)) for name, path in modules.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in graph:
        if name not in order:
            visit(name)
    return sorted(cycles)


def private_imports(package: Path) -> list[str]:
    """``module:line imports other._name`` for each private name taken from another module."""
    modules = _modules(package)
    out = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if _known(node.module, modules) in (None, name):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append(f"{name}:{node.lineno} imports {node.module}.{alias.name}")
    return out


def test_no_module_imports_one_that_imports_it_back():
    assert import_cycles(ROOT / "pagelens") == []


def test_no_module_imports_another_modules_private_names():
    assert private_imports(ROOT / "pagelens") == []


def test_the_private_check_finds_a_private_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("_hidden = 1\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import _hidden, __doc__\n")
    (pkg / "c.py").write_text("from os import _exit\n")  # not the package's
    assert private_imports(pkg) == ["pkg.b:2 imports pkg.a._hidden"]


def test_the_graph_counts_deferred_and_type_only_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    import pkg.a\n")  # deferred: a <-> b
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..d import x\n"
    )
    (pkg / "d.py").write_text("from pkg.sub import c\n")  # type-only: sub.c <-> d
    (pkg / "e.py").write_text("import pkg.a\nimport os\n")  # no cycle
    assert import_cycles(pkg) == [["pkg.a", "pkg.b"], ["pkg.d", "pkg.sub", "pkg.sub.c"]]
