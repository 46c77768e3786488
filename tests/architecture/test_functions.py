"""No function over 80 lines in the package (issue 20): a long function is split into named steps.

A function's length runs from its `def` line to its last line (decorators, such as a click command's
options, are not counted). Its complexity is capped by ruff (C90, max-complexity 15 in pyproject.toml;
tests/architecture/test_lint.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hpc_marker"
MAX_FUNCTION_LINES = 80
# removed at merge (issue 20 item 1/2): rewritten on other branches
EXEMPT: set[str] = set()


def function_lengths(path: Path, prefix: str = "") -> dict[str, int]:
    """Every function and method of one module, nested ones too, as 'Class.method' or 'outer.inner' -> lines."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{scope}{child.name}"
                found[f"{prefix}{name}"] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{scope}{child.name}.")
            else:
                visit(child, scope)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def package_function_lengths() -> dict[str, int]:
    lengths: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lengths |= function_lengths(path, f"{path.relative_to(PACKAGE).as_posix()}::")
    return lengths


def test_no_function_is_over_80_lines():
    lengths = package_function_lengths()
    long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES and name not in EXEMPT}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {long}"


def test_every_exemption_is_still_needed():
    """An exempt function that was split (or renamed) leaves the set: the set only shrinks."""
    lengths = package_function_lengths()
    stale = sorted(name for name in EXEMPT if lengths.get(name, 0) <= MAX_FUNCTION_LINES)
    assert not stale, f"no longer over {MAX_FUNCTION_LINES} lines (or gone): remove from EXEMPT: {stale}"


def test_the_measure_counts_methods_and_nested_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import click\n"
        "@click.command()\n"
        "@click.option('--x')\n"
        "def top(x):\n"
        "    def inner():\n"
        "        return 1\n"
        "    return inner()\n"
        "class K:\n"
        "    async def method(self):\n"
        "        pass\n"
    )
    assert function_lengths(module, "m.py::") == {"m.py::top": 4, "m.py::top.inner": 2, "m.py::K.method": 2}
