"""The local executor starting a run's tasks (executors/local.py: LocalExecutor._start), with submitit's
LocalExecutor stood in for: it looks for a `cancel` mark before it starts each task (a stat each: a local run has a
few tasks, and one started after `cancel` looked for the run's processes would outlive it: CI saw `cancel` report a
process alive when the look was once a second); a run cancelled before its start starts none."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from hpc_marker.executors import local
from hpc_marker.executors.base import RunJobs
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.slurm.arrays import ArrayLayout, single_array

TASKS = 12


class _Executor:
    """submitit.LocalExecutor as `_start` uses it: each submit is a job (its id, a made-up pid)."""

    ids = itertools.count(1000)

    def __init__(self, folder) -> None:
        self.folder = folder

    def update_parameters(self, **_kw) -> None:
        pass

    def submit(self, _fn, *_args):
        return SimpleNamespace(job_id=str(next(self.ids)))


@pytest.fixture
def start(tmp_path, monkeypatch):
    monkeypatch.setattr(local.submitit, "LocalExecutor", _Executor)
    looks: list[bool] = []
    real = local._cancelled
    monkeypatch.setattr(local, "_cancelled", lambda paths: looks.append(real(paths)) or looks[-1])
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    record = SimpleNamespace(workers_per_gpu=1, engine="text", mps="off", time_limit="01:00:00", llm=None)
    jobs = RunJobs(convert=lambda root, index: None, collect=lambda root: None)

    def run() -> tuple[list, list[bool]]:
        ids: dict[str, list[str]] = {}
        layout = ArrayLayout(single_array(list(range(TASKS))).arrays)
        return local.LocalExecutor._start(paths, record, layout, jobs, ids, None), looks

    return paths, run


def test_starting_the_tasks_looks_for_a_cancel_before_each(start):
    _, run = start
    tasks, looks = run()
    assert len(tasks) == TASKS
    assert looks == [False] * TASKS


def test_a_run_cancelled_before_its_start_starts_no_task(start):
    paths, run = start
    paths.cancel_mark.touch()
    tasks, looks = run()
    assert tasks == [] and looks == [True]
