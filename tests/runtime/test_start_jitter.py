"""--start-jitter: each task's start-up delay is below the run's jitter, fixed per task, and spread over it."""

from __future__ import annotations

import re

import pytest
from runkit import run_local

from hpc_marker.config.options import check_values
from hpc_marker.config.types import JITTER_MAX_S, parse_start_jitter
from hpc_marker.runtime.startup import jitter_delay


def test_auto_scales_with_the_tasks_up_to_its_ceiling():
    assert parse_start_jitter("auto", 64) == pytest.approx(3.2)
    assert parse_start_jitter("auto", 1) == pytest.approx(0.05)
    assert parse_start_jitter("auto", 100_000) == JITTER_MAX_S
    assert parse_start_jitter("0", 1000) == 0.0
    assert parse_start_jitter("12.5", 3) == 12.5


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_a_bad_jitter_is_refused_in_one_line(value):
    problem = check_values(start_jitter=value)
    assert problem == f"--start-jitter {value!r}: use auto or a number of seconds (0: none)"


def test_delays_are_fixed_per_task_and_spread_over_the_jitter():
    jitter = parse_start_jitter("auto", 64)
    delays = [jitter_delay("20261206-110000-ab12", task, jitter) for task in range(64)]
    assert delays == [jitter_delay("20261206-110000-ab12", task, jitter) for task in range(64)]  # fixed per task
    assert all(0 <= d < jitter for d in delays)
    assert len(set(delays)) == 64
    quarters = [sum(q * jitter / 4 <= d < (q + 1) * jitter / 4 for d in delays) for q in range(4)]
    assert min(quarters) >= 8, quarters  # 16 expected in each
    assert max(delays) - min(delays) > 0.8 * jitter
    other_run = [jitter_delay("20261206-110001-cd34", task, jitter) for task in range(64)]
    assert other_run != delays  # another run, other delays
    assert jitter_delay("any", 3, 0.0) == 0.0


@pytest.mark.slow
def test_each_task_of_a_local_run_waits_its_own_delay(sample_pdfs, tmp_path):
    run = run_local(sample_pdfs, tmp_path / "out", "--gpus", "3", "--start-jitter", "2")
    record = run.paths.load_record()
    assert record.start_jitter == "2" and record.tasks == 3
    logs = "\n".join(
        p.read_text(errors="replace") for p in run.paths.root.rglob("*") if p.is_file() and "log" in p.name
    )
    waited = {
        int(task): float(seconds)
        for task, seconds in re.findall(
            r"task (\d+): start-up jitter: waiting ([\d.]+) s \(--start-jitter 2: below 2 s\)", logs
        )
    }
    assert waited == {task: round(jitter_delay(record.run_id, task, 2.0), 1) for task in range(3)}, logs[-3000:]
