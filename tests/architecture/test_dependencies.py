"""Every third-party package hpc_marker imports is declared in pyproject.toml (the dependencies or an extra):
nothing works only because another package happens to pull it in. submitit is no longer one of them: the job
runner is ours (util/jobrun.py)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hpc_marker"
DISTRIBUTION = {"marker": "marker-pdf", "surya": "surya-ocr"}  # import name -> distribution, where they differ


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, list[str]]:
    """Distribution name -> its requirement strings, from the dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found: dict[str, list[str]] = {}
    extras = [r for requirements in project["optional-dependencies"].values() for r in requirements]
    for requirement in [*project["dependencies"], *extras]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        found.setdefault(normalized(name), []).append(requirement)
    return found


def imported() -> dict[str, str]:
    """Top-level third-party module -> the first file importing it (imports inside functions too)."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top and top != "hpc_marker" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    known = declared()
    missing = [
        f"{module} ({where})"
        for module, where in sorted(imported().items())
        if normalized(DISTRIBUTION.get(module, module)) not in known
    ]
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_no_job_depends_on_submitit():
    """Nothing hpcmarker ships imports submitit or names its runner: not the package, not a shipped template."""
    assert "submitit" not in imported() and "submitit" not in declared()
    shipped = [*PACKAGE.rglob("*.py"), *(ROOT / "templates").rglob("*.j2")]
    named = [str(p.relative_to(ROOT)) for p in shipped if "submitit." in p.read_text(encoding="utf-8")]
    assert not named, f"submitit's modules named in: {named}"
