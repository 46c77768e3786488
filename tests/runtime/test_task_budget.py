"""A task's share of the LLM concurrency budget counts the tasks `hpcmarker grow` added (startup.task_budget)."""

from __future__ import annotations

from types import SimpleNamespace

from runkit import bare_record

from hpc_marker.llm.budget import FILL
from hpc_marker.llm.settings import LlmRecord
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.progress import add_grown
from hpc_marker.runstate.record import Round, RunRecord
from hpc_marker.runtime.startup import task_budget


def _record(grown: tuple[int, ...]) -> RunRecord:
    llm = LlmRecord(model="m", gpus=1, parallel=16, wait_timeout_s=5, request_timeout_s=600, cpus=1)
    return bare_record(
        tasks=4, gpus=4, workers_per_gpu=4, cpus_per_task=4, llm=llm, rounds=[Round(1, 0, (0, 1, 2, 3), grown=grown)]
    )


def test_grown_tasks_take_what_the_plans_tasks_leave_and_later_plan_tasks_count_them(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.progress.mkdir(parents=True)
    summaries = [object()] * 4  # the plan's 4 shares (only their count matters here)
    before = task_budget(_record(()), paths, SimpleNamespace(index=0, summaries=summaries, workers=4))
    assert (before.clients, before.max_concurrency, before.in_flight) == (16, 2, 32)  # 2 x 16 slots
    grown = tuple(range(4, 16))
    add_grown(paths.progress, list(grown))  # `grow` lists them before they start
    record = _record(grown)
    # a grown task: the plan's tasks keep their 2 per worker until they end; it takes the rest, at least 1
    mine = task_budget(record, paths, SimpleNamespace(index=15, summaries=summaries, workers=4))
    assert mine.max_concurrency == 1 and mine.others_in_flight == 32 + 11 * 4
    assert mine.in_flight == 80 < FILL * 16 + 16 * 4  # the plan's share again would be 32 + 96 = 128
    assert mine.timeout_s == (5 + 1) * 600  # 80 in flight: 5 turns at 16 slots, then its own
    # a task of the plan that starts after the growth (queued, requeued) counts the round's grown tasks
    later = task_budget(record, paths, SimpleNamespace(index=1, summaries=summaries, workers=4))
    assert (later.clients, later.max_concurrency) == (64, 1)
