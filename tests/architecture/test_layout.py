"""The package's folders are its architecture: dependencies flow one way, no import cycles, small modules.

The import graph is read statically from the source (every import, also those inside functions).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hpc_marker"
# The top level the project was specified with (benchmarks/ and examples/ may sit beside it).
TOP_LEVEL = ("pyproject.toml", "README.md", "hpc_marker/", "templates/", "scripts/", "tests/", "docs/")

# A module may import only from its own layer or lower ones (docs/architecture.md).
LAYERS = {
    "util": 0,
    "config": 1,
    "planning": 1,
    "runstate": 1,
    "slurm": 1,
    "llm": 1,
    "engines": 1,
    "servers": 1,
    "quality": 1,
    "executors": 2,
    "runtime": 2,
    "submission": 3,
    "manage": 3,
    "admin": 3,
    "report": 3,
    "export": 3,
    "cli": 4,
    "__main__": 5,
}
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 8


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            candidates = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        targets |= {c for c in candidates if c in known and c != name}
    return targets


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    edges = {}
    for name, path in found.items():
        edges[name] = {
            t for t in imports(name, path, known) if not name.startswith(t + ".") and not t.startswith(name + ".")
        }
    return edges


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_dependencies_flow_one_way():
    wrong = []
    for source, targets in graph().items():
        src = package_of(source)
        if src == "__init__":
            continue
        assert src in LAYERS, f"{source}: package {src!r} has no layer in this test (and docs/architecture.md)"
        for target in targets:
            dst = package_of(target)
            if dst != "__init__" and LAYERS[dst] > LAYERS[src]:
                wrong.append(f"{source} ({src}, layer {LAYERS[src]}) imports {target} ({dst}, layer {LAYERS[dst]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_modules_are_small_and_the_top_level_is_nearly_empty():
    big = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_package_says_what_it_owns():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 2, f"{init.relative_to(PACKAGE)}: no docstring saying what it owns"


def test_only_executors_ask_which_executor_a_run_has():
    asking = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "executors":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ('executor == "slurm"', 'executor == "local"', "executor != ", ".executor == "):
            if needle in text:
                asking.append(f"{path.relative_to(PACKAGE)}: {needle}")
    assert not asking, asking


def test_the_top_level_is_the_specified_one():
    missing = [name for name in TOP_LEVEL if not (ROOT / name).exists() or (ROOT / name).is_dir() != name.endswith("/")]
    assert not missing, f"missing at the top of the repository: {missing}"


def test_sbatch_templates_live_once_at_the_top_where_admins_look():
    shipped = [p.parent.name for p in (ROOT / "templates").glob("*/convert.sbatch.j2")]
    assert {"generic", "apptainer"} <= set(shipped), shipped
    copies = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.sbatch.j2")]
    assert not copies, f"a second copy of the sbatch templates inside the package: {copies}"
