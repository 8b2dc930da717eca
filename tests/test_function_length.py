"""No function of pagelens has a body over 60 lines (the house style), nested ones included.

A body is counted from its first statement (docstring included) to its last line,
so a route handler nested in another function counts on its own and in its host.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 60


def long_functions(package: Path) -> list[str]:
    """``path:line name (n lines)`` of every function whose body is over MAX_BODY lines."""
    out = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.body[0].lineno + 1
                if lines > MAX_BODY:
                    where = path.relative_to(package.parent)
                    out.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_body_is_over_60_lines():
    assert long_functions(ROOT / "pagelens") == []


def test_the_count_reaches_nested_functions(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    inner = "\n".join(f"        x{i} = {i}" for i in range(61))
    (pkg / "m.py").write_text(f"def outer():\n    def inner():\n{inner}\n    return inner\n")
    assert long_functions(pkg) == ["pkg/m.py:1 outer (63 lines)", "pkg/m.py:2 inner (61 lines)"]
