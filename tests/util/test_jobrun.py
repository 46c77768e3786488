"""The job runner (util/jobrun.py), run as every job runs it: `python -u -m hpc_marker.util.jobrun JOBS [...]`.
On Slurm it loads `<array or job id>.call` (waiting for it a while) and appends the array task's own index; locally
it loads the call it is given, is its job (id: its pid) and writes its two logs; it exits 0 or with the traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hpc_marker.util.jobrun import JobCall, job_id, job_logs, local_args, runner_command, write_call


def _run(jobs: Path, *options: str, env: dict[str, str] | None = None, timeout: float = 60):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "HPCMARKER_JOB_ID"}
    argv = runner_command(sys.executable, jobs, *options)
    return subprocess.run(argv, env=clean | (env or {}), capture_output=True, text=True, timeout=timeout)


def test_an_array_task_runs_the_arrays_one_call_with_its_own_task_index(tmp_path):
    write_call(tmp_path / "42.call", JobCall(print, ("task",), {0: 7, 1: 9, 2: 11}))
    done = _run(tmp_path, env={"SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "43"})
    assert (done.returncode, done.stdout, done.stderr) == (0, "task 9\n", "")


def test_the_job_id_is_slurms_for_the_call_it_runs(tmp_path):
    write_call(tmp_path / "42.call", JobCall(os.system, ("echo job=$HPCMARKER_JOB_ID",)))
    done = _run(tmp_path, env={"SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "45"})
    assert done.stdout == "job=42_3\n"
    write_call(tmp_path / "50.call", JobCall(os.system, ("echo job=$HPCMARKER_JOB_ID",)))
    assert _run(tmp_path, env={"SLURM_JOB_ID": "50"}).stdout == "job=50\n"


def test_a_job_that_starts_before_its_call_is_in_place_waits_for_it(tmp_path):
    runner = subprocess.Popen(
        runner_command(sys.executable, tmp_path),
        env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | {"SLURM_JOB_ID": "7"},
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    write_call(tmp_path / "7.call", JobCall(print, ("late",)))
    out, _ = runner.communicate(timeout=30)
    assert (runner.returncode, out) == (0, "late\n")


def test_a_failing_call_exits_non_zero_with_its_traceback(tmp_path):
    write_call(tmp_path / "8.call", JobCall(int, ("not a number",)))
    done = _run(tmp_path, env={"SLURM_JOB_ID": "8"})
    assert done.returncode == 1
    assert "Traceback" in done.stderr and done.stderr.strip().splitlines()[-1].startswith("ValueError: invalid literal")
    assert not list(tmp_path.glob("*.pkl")) and sorted(p.name for p in tmp_path.iterdir()) == ["8.call"]  # no result


def test_a_local_job_is_its_pid_and_writes_its_own_two_logs(tmp_path):
    write_call(tmp_path / "local.call", JobCall(os.system, ("echo job=$HPCMARKER_JOB_ID; echo oops >&2",)))
    runner = subprocess.Popen(runner_command(sys.executable, tmp_path, *local_args("local.call", 2, None)))
    assert runner.wait(timeout=60) == 0
    out, err = job_logs(tmp_path, str(runner.pid))
    assert out.read_text() == f"job={runner.pid}\n" and err.read_text() == "oops\n"


def test_a_local_task_gets_usr2_ahead_of_its_time_limit(tmp_path):
    """Its time limit, as Slurm would give it: USR2 30 s before (here at once: a 2 s limit), then SIGTERM."""
    write_call(tmp_path / "local.call", JobCall(time.sleep, (), tasks={0: 30}))
    start = time.monotonic()
    runner = subprocess.Popen(runner_command(sys.executable, tmp_path, *local_args("local.call", 0, 2)))
    assert runner.wait(timeout=30) == -signal.SIGUSR2  # nothing caught it: its default action ends the job
    assert time.monotonic() - start < 20


def test_a_local_service_or_collector_gets_no_usr2_only_sigterm_at_its_limit(tmp_path):
    """Only array tasks ask Slurm for --signal: a service (which stops on SIGTERM) is not killed by USR2 early."""
    write_call(tmp_path / "local.call", JobCall(time.sleep, (30,)))
    runner = subprocess.Popen(runner_command(sys.executable, tmp_path, *local_args("local.call", None, 2)))
    assert runner.wait(timeout=30) == -signal.SIGTERM


def test_job_id_reads_the_runners_first_then_slurms():
    assert job_id({"HPCMARKER_JOB_ID": "99", "SLURM_JOB_ID": "5"}) == "99"
    assert job_id({"SLURM_ARRAY_JOB_ID": "4", "SLURM_ARRAY_TASK_ID": "2", "SLURM_JOB_ID": "6"}) == "4_2"
    assert job_id({"SLURM_JOB_ID": "5"}) == "5"
    assert job_id({}) is None


def test_a_call_file_written_before_calls_carried_an_environment_still_runs(tmp_path):
    """A job queued by an earlier hpcmarker, started after an upgrade: its call file is the JobCall pickled alone."""
    import pickle

    with open(tmp_path / "old", "wb") as fh:
        pickle.dump(JobCall(print, ("old",)), fh)
    done = _run(tmp_path, "--call", "old")
    assert done.returncode == 0, done.stderr
    assert next(tmp_path.glob("*_0_log.out")).read_text() == "old\n"
