"""The local executor starting a run's tasks (executors/local.py: LocalExecutor._start), with the start of each
job's process stood in for: one call file for all the tasks; it looks for a `cancel` mark before it starts each task
(a stat each: a local run has a few tasks, and one started after `cancel` looked for the run's processes would outlive
it: CI saw `cancel` report a process alive when the look was once a second); a run cancelled before its start starts
none."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from hpc_marker.executors import local
from hpc_marker.executors.base import RunJobs
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.slurm.arrays import ArrayLayout, single_array
from hpc_marker.util.jobrun import load_call

TASKS = 12


PIDS = itertools.count(1000)


@pytest.fixture
def start(tmp_path, monkeypatch):
    started: list[tuple] = []
    monkeypatch.setattr(  # each start is a job (a made-up pid)
        local, "start_job", lambda *args: started.append(args) or SimpleNamespace(pid=next(PIDS))
    )
    looks: list[bool] = []
    real = local._cancelled
    monkeypatch.setattr(local, "_cancelled", lambda paths: looks.append(real(paths)) or looks[-1])
    paths = RunPaths(tmp_path / "run")
    paths.jobs.mkdir(parents=True)
    record = SimpleNamespace(workers_per_gpu=1, engine="text", mps="off", time_limit="01:00:00", llm=None)
    jobs = RunJobs(convert=divmod, collect=len)  # picklable, by reference

    def run() -> tuple[list, list[bool]]:
        ids: dict[str, list[str]] = {}
        layout = ArrayLayout(single_array(list(range(TASKS))).arrays)
        return local.LocalExecutor._start(paths, record, layout, jobs, ids, None), looks

    return paths, run, started


def test_starting_the_tasks_looks_for_a_cancel_before_each(start):
    _, run, _ = start
    tasks, looks = run()
    assert len(tasks) == TASKS
    assert looks == [False] * TASKS


def test_the_tasks_started_together_share_one_call_file(start):
    paths, run, started = start
    run()
    (call,) = paths.jobs.glob("*.call")  # one, not one per task
    assert [args[1:] for args in started] == [(call.name, index, 3600, "") for index in range(TASKS)]
    loaded = load_call(call)
    assert (loaded.function, loaded.args) == (divmod, (str(paths.root),))
    assert loaded.tasks == {index: index for index in range(TASKS)}


def test_a_run_cancelled_before_its_start_starts_no_task(start):
    paths, run, _ = start
    paths.cancel_mark.touch()
    tasks, looks = run()
    assert tasks == [] and looks == [True]
