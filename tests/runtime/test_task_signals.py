"""A task cancelled while it starts says `cancelled` in its stop record, never `running` (which `status` reads as
killed without a word). CI once saw a Ctrl-C 2 s into a local run on a loaded machine leave task 0 at `running`:
its SIGTERM came after the record was written and before the task's handler was installed, and the default action
killed it. Here the signal is sent at those two moments, in this process; a handler standing in for the default
action tells whether the task's own handler was in place."""

from __future__ import annotations

import os
import signal

import pytest

from hpc_marker.runstate import stops as stops_module
from hpc_marker.runstate.stops import read_stops
from hpc_marker.runtime import task as task_module
from hpc_marker.runtime.task import run_task
from hpc_marker.submission.launch import prepare_run
from hpc_marker.submission.request import SubmitRequest


class KilledWithoutAWord(BaseException):
    """What SIGTERM's default action would do to a task process: end it, running no handler of its own."""


def _default_action(_signum, _frame) -> None:
    raise KilledWithoutAWord


@pytest.fixture
def default_sigterm():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    signal.signal(signal.SIGTERM, _default_action)
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def _cancel_during(monkeypatch, module, name: str) -> None:
    """SIGTERM to this process once `module.name` has run (the moment a local cancel's signal lands)."""
    original = getattr(module, name)

    def then_cancelled(*args, **kwargs):
        value = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return value

    monkeypatch.setattr(module, name, then_cancelled)


@pytest.mark.parametrize("moment", ["record written", "setting up"])
def test_a_task_cancelled_while_it_starts_says_cancelled(sample_pdfs, tmp_path, monkeypatch, default_sigterm, moment):
    prepared = prepare_run(
        SubmitRequest.with_defaults(
            pdfs=sample_pdfs, out=tmp_path / "out", gpus=1, engine="benchmark", executor="local", workers_per_gpu=1
        )
    )
    if moment == "record written":
        _cancel_during(monkeypatch, stops_module, "_padded")  # inside StopRecord(): the record says `running`
    else:
        _cancel_during(monkeypatch, task_module.TaskSetup, "for_task")
    with pytest.raises(SystemExit) as ended:
        run_task(str(prepared.paths.root), 0)
    assert ended.value.code == 128 + signal.SIGTERM
    stop = read_stops(prepared.paths.progress)[0]
    assert stop.cause == "cancelled" and stop.stopped is not None, stop
