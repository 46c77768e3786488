"""Allocators that hand freed memory back (util/memory.py): the collector's job asks for Arrow's jemalloc pool before
the call it runs imports pyarrow (Arrow reads the choice once, then), unless its environment names a pool already;
a job whose call asks for nothing (a task) keeps Arrow's default."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from hpc_marker.util.jobrun import JobCall, runner_command, write_call
from hpc_marker.util.memory import (
    ARROW_POOL_ENV,
    arrow_pool_environment,
    ask_arrow_pool,
    give_back,
    returning_allocators,
)

_BACKEND = "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def _has_jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


def test_the_pool_asked_for_is_a_default_only():
    environ: dict[str, str] = {}
    ask_arrow_pool(environ)
    assert environ == {ARROW_POOL_ENV: "jemalloc"} == arrow_pool_environment()
    environ = {ARROW_POOL_ENV: "system"}
    ask_arrow_pool(environ)
    assert environ == {ARROW_POOL_ENV: "system"}


@pytest.mark.skipif(not _has_jemalloc(), reason="this pyarrow was built without jemalloc")
@pytest.mark.parametrize(
    ("asks", "given", "expected"),
    [(True, None, "jemalloc"), (True, "system", "system"), (False, None, None)],
)
def test_a_job_whose_call_asks_for_jemalloc_allocates_from_it_unless_told_otherwise(tmp_path, asks, given, expected):
    write_call(tmp_path / "one", JobCall(exec, (_BACKEND,), environ=arrow_pool_environment() if asks else None))
    env = {k: v for k, v in os.environ.items() if k != ARROW_POOL_ENV and not k.startswith("SLURM_")}
    if expected is None:  # a call that asks for nothing: Arrow's own default, as a bare Python gets it
        bare = subprocess.run([sys.executable, "-c", _BACKEND], env=env, capture_output=True, text=True, timeout=120)
        expected = bare.stdout.strip()
    done = subprocess.run(
        runner_command(sys.executable, tmp_path, "--call", "one"),
        env=env | ({ARROW_POOL_ENV: given} if given else {}),
        timeout=120,
    )
    assert done.returncode == 0
    assert next(tmp_path.glob("*_0_log.out")).read_text() == f"{expected}\n"


def test_the_collectors_allocators_can_be_set_and_trimmed_in_any_order():
    returning_allocators()  # glibc's mallopt and Arrow's pool: no error, twice
    returning_allocators()
    give_back()
    if _has_jemalloc():
        assert pa.default_memory_pool().backend_name == "jemalloc"


@pytest.mark.skipif(not _has_jemalloc(), reason="this pyarrow was built without jemalloc")
def test_hpcmarker_collect_asks_for_jemalloc_and_other_commands_do_not(tmp_path):
    """`hpcmarker collect` collects in its own process, as the collector job does; no other command asks (a local
    `submit`'s tasks inherit its environment, and they keep Arrow's default)."""
    collector = (  # the collector, stood in for without importing pyarrow first: the pool it then gets
        "import sys, types\n"
        "def collect_run(root):\n"
        "    import pyarrow as pa\n"
        "    print('POOL', pa.default_memory_pool().backend_name)\n"
        "    sys.exit(0)\n"
        "sys.modules['hpc_marker.manage.collect'] = types.SimpleNamespace(collect_run=collect_run)\n"
    )
    command = "import os, sys\nfrom hpc_marker.cli import main\nsys.argv = ['hpcmarker', *sys.argv[1:]]\n"
    after = "try:\n    main()\nfinally:\n    print('ENV', os.environ.get('ARROW_DEFAULT_MEMORY_POOL'))\n"
    env = {k: v for k, v in os.environ.items() if k != ARROW_POOL_ENV}
    run = tmp_path / "out" / ".hpcmarker" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    for argv, expected in ((["collect", str(run)], "POOL jemalloc"), (["--version"], "ENV None")):
        done = subprocess.run(
            [sys.executable, "-c", collector + command + after, *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert expected in done.stdout, done.stdout + done.stderr
