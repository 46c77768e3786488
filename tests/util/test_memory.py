"""Allocators that hand freed memory back (util/memory.py): every job asks for Arrow's jemalloc pool before the
call it runs imports pyarrow (Arrow reads the choice once, then), unless its environment names a pool already."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from hpc_marker.util.jobrun import JobCall, runner_command, write_call
from hpc_marker.util.memory import ARROW_POOL_ENV, arrow_pool_environment, give_back, returning_allocators

_BACKEND = "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def _has_jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


def test_the_pool_asked_for_is_a_default_only():
    environ: dict[str, str] = {}
    arrow_pool_environment(environ)
    assert environ == {ARROW_POOL_ENV: "jemalloc"}
    environ = {ARROW_POOL_ENV: "system"}
    arrow_pool_environment(environ)
    assert environ == {ARROW_POOL_ENV: "system"}


@pytest.mark.skipif(not _has_jemalloc(), reason="this pyarrow was built without jemalloc")
@pytest.mark.parametrize(("given", "expected"), [(None, "jemalloc"), ("system", "system")])
def test_a_jobs_arrow_allocates_from_jemalloc_unless_told_otherwise(tmp_path, given, expected):
    write_call(tmp_path / "one", JobCall(exec, (_BACKEND,)))
    env = {k: v for k, v in os.environ.items() if k != ARROW_POOL_ENV and not k.startswith("SLURM_")}
    done = subprocess.run(
        runner_command(sys.executable, tmp_path, "--call", "one"),
        env=env | ({ARROW_POOL_ENV: given} if given else {}),
        timeout=120,
    )
    assert done.returncode == 0
    out = next(tmp_path.glob("*_0_log.out")).read_text()
    assert out == f"{expected}\n"


def test_the_collectors_allocators_can_be_set_and_trimmed_in_any_order():
    returning_allocators()  # glibc's mallopt and Arrow's pool: no error, twice
    returning_allocators()
    give_back()
    if _has_jemalloc():
        assert pa.default_memory_pool().backend_name == "jemalloc"
