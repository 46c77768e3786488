"""What a task imports before its workers start: every task (and every process that loads a share of the plan) pays
for each library it imports, hundreds of times a test run and once per array task on a cluster; the ones only the
workers or the planner use stay out (docs/ci.md, "Where the CPU goes")."""

from __future__ import annotations

import subprocess
import sys

from runkit import make_run

LEFT_OUT = ("pdftext", "pydantic_settings", "pyarrow.compute")  # the text engine's workers; make_plan's columns

TASK = """import sys
from pathlib import Path
import hpc_marker.runtime.task
from hpc_marker.engines import EngineOptions, check_engine
from hpc_marker.planning.store import load_share, load_summary
check_engine("text", EngineOptions())  # what a task checks before it starts its workers
plan = Path(sys.argv[1])
batches = load_share(plan, load_summary(plan)[0]).batches()
print(sum(len(batch) for batch in batches))
print(" ".join(sorted(name for name in sys.modules if name.startswith(("pdftext", "pydantic", "pyarrow")))))
"""


def test_a_task_checks_the_text_engine_and_loads_its_share_without_the_workers_libraries(tmp_path, sample_pdfs):
    prepared = make_run(sample_pdfs, tmp_path / "out", gpus=1)
    done = subprocess.run(
        [sys.executable, "-c", TASK, str(prepared.paths.plan)], capture_output=True, text=True, check=True
    )
    items, modules = done.stdout.splitlines()
    assert int(items) == len(prepared.plan.items)  # the share was read
    assert "pyarrow.parquet" in modules.split()
    assert not [name for name in modules.split() if name.startswith(LEFT_OUT)], modules


WORKER = """import sys, tempfile
from hpc_marker.runtime.worker import convert_to_staging, init_worker
init_worker("text", {"output_format": "markdown"}, 1)  # what a fresh worker runs within its startup allowance
loaded = set(sys.modules)
convert_to_staging(sys.argv[1], 0, 1, tempfile.mkdtemp(), "000000.p000", "doc")
print(" ".join(sorted(set(sys.modules) - loaded)))
"""


def test_a_workers_first_item_imports_nothing_its_clock_is_the_items_own(sample_pdfs):
    """A fresh worker (the first, or the one that replaces a worker ended at a timeout) loads its engine's libraries
    in its initializer, under the startup allowance: its first item's --item-timeout clock pays no import (pdftext's
    cost 0.25 CPU s, an eighth of a 2 s limit, more on a loaded node)."""
    pdf = next(iter(sorted(sample_pdfs.rglob("*.pdf"))))
    done = subprocess.run([sys.executable, "-c", WORKER, str(pdf)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], done.stdout
