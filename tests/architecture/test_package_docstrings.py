"""Each package's `__init__` docstring says what it owns and lists its modules: every module file of the
package (and every subpackage of the top package) is named there, and every module named there exists, so a
module added, renamed or split shows up here until its package's docstring says so."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hpc_marker"
# A module named as `name.py`, not as part of another path (`runtime/task.py` names another package's module).
NAMED_MODULE = re.compile(r"(?<![\w/.])([A-Za-z_]\w*)\.py\b")


def packages(root: Path = PACKAGE) -> list[Path]:
    return sorted(p.parent for p in root.rglob("__init__.py") if "__pycache__" not in p.parts)


def docstring(package: Path) -> str:
    return ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""


def modules(package: Path) -> list[str]:
    """The package's module files (`__init__.py` aside), and its subpackages as `name/`."""
    files = [p.name for p in package.glob("*.py") if p.name != "__init__.py"]
    subpackages = [f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    return sorted(files + subpackages)


def named(text: str, module: str) -> bool:
    """`module` (`x.py`, or a subpackage `x/`) is named in `text`: `x.py`, or the word `x` for a subpackage."""
    if module.endswith("/"):
        return re.search(rf"(?<![\w/.]){re.escape(module[:-1])}\b", text) is not None
    return module[:-3] in NAMED_MODULE.findall(text)


def problems(root: Path = PACKAGE) -> list[str]:
    found = []
    for package in packages(root):
        where = f"{package.relative_to(root.parent)}/__init__.py"
        text = docstring(package)
        present = modules(package)
        found += [f"{where}: its docstring does not name the module {m}" for m in present if not named(text, m)]
        found += [
            f"{where}: its docstring names {name}.py, which is not a module of the package"
            for name in dict.fromkeys(NAMED_MODULE.findall(text))
            if f"{name}.py" not in present
        ]
    return found


def test_each_package_docstring_lists_its_modules():
    found = problems()
    assert not found, "package docstrings out of date (say what each module owns, one line each):\n" + "\n".join(found)


def test_the_check_sees_a_missing_and_a_stale_module(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text('"""pkg: top.\n\n  sub  a subpackage\n  a.py  the a\n"""\n')
    (root / "a.py").write_text("")
    (root / "sub" / "__init__.py").write_text('"""sub.\n\nb.py  the b (not c.py: see pkg/a.py)\nold.py  gone\n"""\n')
    (root / "sub" / "b.py").write_text("")
    (root / "sub" / "new.py").write_text("")
    assert problems(root) == [
        "pkg/sub/__init__.py: its docstring does not name the module new.py",
        "pkg/sub/__init__.py: its docstring names c.py, which is not a module of the package",
        "pkg/sub/__init__.py: its docstring names old.py, which is not a module of the package",
    ]
    (root / "sub" / "__init__.py").write_text('"""sub.\n\nb.py  the b\nnew.py  the new one\n"""\n')
    (root / "__init__.py").write_text('"""pkg: top; a.py the a.\n"""\n')
    assert problems(root) == ["pkg/__init__.py: its docstring does not name the module sub/"]
