"""An engine that cannot start on the node stops its task (issue 19): no item fails or moves toward poison,
the run is `incomplete` (exit 4) with one short line that says what is missing and the command that fixes it."""

from __future__ import annotations

import pytest
from inputs import EXAMPLES
from runkit import invoke, manifest_records, run_local

from hpc_marker.runstate.progress import read_commits
from hpc_marker.runstate.stops import read_stops

INCOMPLETE = 4
START_ERROR_VARIABLE = "HPCMARKER_BENCH_START_ERROR"  # engines/benchmark.py: every worker fails to build it
ENGINE, ENGINE_CACHE = "engine", "engine_cache"  # the stop causes (runstate/stops.py)


@pytest.mark.slow
@pytest.mark.parametrize(
    "error, cause",
    [("cache:font GoNoto.ttf, model layout", ENGINE_CACHE), ("libcuda.so.1: cannot open shared object file", ENGINE)],
)
def test_engine_that_cannot_start_stops_the_task_and_fails_no_item(tmp_path, monkeypatch, error, cause):
    monkeypatch.setenv(START_ERROR_VARIABLE, error)
    run = run_local(
        EXAMPLES,
        tmp_path / "out",
        "--engine",
        "benchmark",
        "--gpus",
        "2",
        "--min-task-pages",
        "1",
        "--workers-per-gpu",
        "2",
        expect=INCOMPLETE,
    )
    run_id = run.paths.root.name
    assert manifest_records(run.paths) == []  # nothing recorded as failed
    assert read_commits(run.paths.progress).empty  # nor counted toward poison
    stops = read_stops(run.paths.progress)
    assert len(stops) == 2 and {s.cause for s in stops.values()} == {cause}, stops  # each task, at its first item
    detail = stops[0].detail
    assert detail.startswith("engine 'benchmark' cannot run on ") and error.removeprefix("cache:") in detail
    assert len(detail) < 200
    status = invoke("status", run_id)
    assert status.exit_code == INCOMPLETE, status.output
    assert "6 of 6 items not converted" in status.output
    assert "failed" not in status.output.split("items not converted")[0]
    if cause == ENGINE_CACHE:
        assert (
            f"next: hpcmarker prefetch --marker && source ~/.cache/hpcmarker/env.sh && hpcmarker resume {run_id}"
            in " ".join(status.output.split())
        )
    else:
        assert f"next: hpcmarker resume {run_id}" in status.output
        assert "retry" not in status.output
    monkeypatch.delenv(START_ERROR_VARIABLE)  # the node is fixed: resume converts everything
    again = invoke("resume", run_id)
    assert again.exit_code == 0, again.output
    assert {r.status for r in manifest_records(run.paths)} == {"ok"}
