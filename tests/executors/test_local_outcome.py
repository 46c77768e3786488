"""How a local `submit` tells how a job ended: from its exit code (no result file); a failed job's problem is the
last line of its stderr log, its traceback's last line (executors/local.py: _job_problem)."""

from __future__ import annotations

from types import SimpleNamespace

from hpc_marker.executors import local
from hpc_marker.executors.base import job_logs
from hpc_marker.runstate.layout import RunPaths


def test_a_job_that_exited_0_has_no_problem(tmp_path):
    assert local._job_problem(RunPaths(tmp_path), SimpleNamespace(returncode=0, pid=7)) is None


def test_a_failed_job_says_the_last_line_of_its_traceback(tmp_path):
    paths = RunPaths(tmp_path)
    paths.jobs.mkdir()
    job_logs(paths, "7")[1].write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1\nOSError: [Errno 28] No space left on device\n\n'
    )
    problem = local._job_problem(paths, SimpleNamespace(returncode=1, pid=7))
    assert problem == "OSError: [Errno 28] No space left on device"


def test_a_killed_job_without_a_word_says_its_exit_code(tmp_path):
    assert local._job_problem(RunPaths(tmp_path), SimpleNamespace(returncode=-9, pid=8)) == "killed by SIGKILL"
    assert local._job_problem(RunPaths(tmp_path), SimpleNamespace(returncode=2, pid=9)) == "exit code 2"
