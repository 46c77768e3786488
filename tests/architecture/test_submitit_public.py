"""submitit is used through its public API only: names from `submitit` itself or `submitit.helpers`, no
private member (`x._name`), no subclass overriding its internals. What a job runs is the one exception:
submitit's runner module, the job protocol its LocalExecutor and our sbatch scripts share."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hpc_marker"
PUBLIC_MODULES = {"submitit", "submitit.helpers"}
INTERNALS = {"core", "slurm", "local", "auto"}  # submitit's subpackages: what they hold beyond the top is not public
RUNNER = "submitit.core._submit"  # the command of every job (executors/slurm.py: submitit_command)


def submitit_names(tree: ast.AST) -> set[str]:
    """Local names bound to submitit or anything imported from it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "submitit"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "submitit":
            names |= {a.asname or a.name for a in node.names}
    return names


def private_uses(text: str, name: str) -> list[str]:
    """Each use of submitit beyond its public API in module `name` (source `text`); in a module that imports
    submitit, any private attribute not of `self`/`cls` counts (it may be one of submitit's objects)."""
    tree = ast.parse(text)
    names = submitit_names(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "submitit":
            if node.module not in PUBLIC_MODULES:
                found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [
                f"{where}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "submitit" and a.name not in PUBLIC_MODULES
            ]
        elif isinstance(node, ast.Attribute) and names:
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            if (private and owner not in {"self", "cls"}) or (owner == "submitit" and node.attr in INTERNALS):
                found.append(f"{where}: {ast.unparse(node)}")
        elif isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            if any(b.split(".")[0] in names for b in bases):
                found.append(f"{where}: class {node.name}({', '.join(bases)})")
        elif isinstance(node, ast.Constant) and str(node.value).startswith("submitit.") and node.value != RUNNER:
            found.append(f"{where}: {node.value!r}")
    return found


def test_submitit_is_used_through_its_public_api_only():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE))
        found += private_uses(path.read_text(encoding="utf-8"), name)
    assert not found, "submitit beyond its public API:\n" + "\n".join(found)


def test_the_check_sees_each_kind_of_private_use():
    sample = (
        "import submitit\nfrom submitit.core import utils\n\n\n"
        "class X(submitit.SlurmExecutor):\n    def f(self):\n        return self._ok\n\n\n"
        "x = X()._submitit_command_str\ny = submitit.core.utils.JobPaths\nz = 'submitit.core.submission'\n"
    )
    found = private_uses(sample, "sample.py")
    assert sorted(f.split(": ", 1)[1] for f in found) == sorted(
        [
            "from submitit.core import ...",
            "class X(submitit.SlurmExecutor)",
            "X()._submitit_command_str",
            "submitit.core",
            "'submitit.core.submission'",
        ]
    ), found
    assert sorted(
        private_uses(
            "import submitit\nfrom submitit.helpers import DelayedSubmission\n"
            "j = submitit.SlurmJob(folder='f', job_id='1').paths\ne = submitit.core._submit\n"
            "c = 'submitit.core._submit'\n",
            "ok.py",
        )
    ) == ["ok.py:4: submitit.core", "ok.py:4: submitit.core._submit"]
