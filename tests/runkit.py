"""Shared helpers for tests that drive `hpcmarker` and read what a run left behind (one copy of each).

- `invoke`: `hpcmarker ARGS...` in this process (click's CliRunner); a bug's exception propagates.
- `LOCAL_TEXT`: submit's options for a run of the text engine on this machine.
- `run_local`: a whole local run with the `text` engine, asserted to succeed unless told otherwise.
- `make_run`: a run folder prepared (scanned, planned, scripts rendered) and registered, not started.
- `run_folder`, `manifest_records`, `read_summary`, `read_record`, `plan_item_ids`, `document`, `documents`:
  where a run's files are, and what they say.
- `manifest_record`: a manifest line, for a test that writes its own.
- `wait_for`: poll `hpcmarker status RUN --json` until the run reaches a state (Slurm runs).
- `wait_until`: poll any check until it holds, failing with a message after a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from click.testing import CliRunner, Result

from hpc_marker.engines import EngineOptions
from hpc_marker.planning.store import load_plan
from hpc_marker.runstate.index import register_run, resolve_run
from hpc_marker.runstate.layout import RUNS_SUBDIR, RunPaths
from hpc_marker.runstate.manifest import ManifestRecord, read_manifests
from hpc_marker.runstate.record import RunRecord

T = TypeVar("T")


def invoke(*args, **kwargs) -> Result:
    """`hpcmarker ARGS...` through the real command group (config defaults, errors as exit codes).
    Arguments may be paths or numbers; keyword arguments go to CliRunner.invoke (env, input,
    terminal_width, ...). Exceptions are not caught: a bug fails the test with its traceback."""
    from hpc_marker.cli import cli

    kwargs.setdefault("catch_exceptions", False)
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def as_from_a_terminal() -> None:
    """preexec_fn of a command a test interrupts as a terminal's Ctrl-C would: SIGINT at its default, as a shell
    in a terminal leaves it. A test run started in the background of a script (no job control: `pytest &`, as
    scripts/test.sh --split does) inherits SIGINT ignored, and the command would never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def submit_from_a_terminal(pdfs: Path, out: Path, run_id: str, seconds_per_page: float, **env: str) -> subprocess.Popen:
    """`hpcmarker submit` of a local benchmark-engine run of 2 tasks (a PDF an item), started as from a terminal:
    its own session (os.killpg(pid, SIGINT) is a terminal's Ctrl-C), SIGINT at its default; output in .stdout."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "hpc_marker", "submit", "--pdfs", str(pdfs), "--out", str(out)),
            *("--engine", "benchmark", "--executor", "local", "--gpus", "2", "--split-pages", "0", "--run-id", run_id),
        ],
        env=dict(os.environ, HPCMARKER_BENCH_SECONDS_PER_PAGE=str(seconds_per_page), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=as_from_a_terminal,
    )


def bare_record(**fields) -> RunRecord:
    """A run record for a test that needs one without a run: a 2-task text run on Slurm; `fields` override."""
    values = dict(
        run_id="r",
        created=0.0,
        pdfs_root="/p",
        out_dir="/o",
        engine="text",
        engine_options=EngineOptions(),
        executor="slurm",
        tasks=2,
        gpus=2,
        workers_per_gpu=1,
        cpus_per_task=1,
        template="generic",
        time_limit="1:00:00",
        steal=True,
        lease_seconds=120.0,
        item_timeout="auto",
        umask=0o077,
        profile="generic",
    )
    return RunRecord(**{**values, **fields})


def manifest_record(item_id: str, **fields) -> ManifestRecord:
    """A manifest line for a test that writes its own: ITEM_ID (of ITEM_ID.pdf, page 0 to 1) ok, converted by the
    text engine in 1 s, from t=1 to 2, by task 0 (job 1_0) on host n, GPU 0; `fields` override, and `pages` is
    page_stop - page_start unless given."""
    values = dict(item_id=item_id, pdf=f"{item_id}.pdf", page_start=0, page_stop=1, status="ok", error=None)
    values |= dict(seconds=1.0, engine="text", host="n", gpu="0", job_id="1_0", task=0, output=None)
    values |= dict(started=1.0, finished=2.0)
    values |= fields
    values.setdefault("pages", values["page_stop"] - values["page_start"])
    return ManifestRecord(**values)


def run_folder(out: Path, run_id: str) -> RunPaths:
    """The folder of run `run_id` under OUT."""
    return RunPaths(Path(out) / RUNS_SUBDIR / run_id)


def manifest_records(paths: RunPaths) -> list[ManifestRecord]:
    """Every line of the run's task manifests, as records (torn lines left out)."""
    return read_manifests(paths.manifests).records


def read_summary(paths: RunPaths) -> dict:
    return json.loads(paths.summary.read_text())


def read_record(paths: RunPaths) -> dict:
    """run.json as written (job ids under "jobs")."""
    return json.loads(paths.record.read_text())


def plan_item_ids(paths: RunPaths) -> list[str]:
    """The ids of every work item of the run's plan, sorted."""
    return sorted(item.item_id for item in load_plan(paths.plan).items)


def document(out: Path, rel: str) -> Path:
    """Where the Markdown of input `rel` goes: OUT/<rel without .pdf>/<stem>.md."""
    return Path(out) / Path(rel).with_suffix("") / f"{Path(rel).stem}.md"


def documents(out: Path) -> list[Path]:
    """Every Markdown file under OUT but the run folders."""
    return sorted(p for p in Path(out).rglob("*.md") if ".hpcmarker" not in p.parts)


@dataclass
class LocalRun:
    """A finished `submit --executor local`: the command's result and the run's folder."""

    result: Result
    paths: RunPaths

    @property
    def output(self) -> str:
        return self.result.output

    @property
    def records(self) -> list[ManifestRecord]:
        return manifest_records(self.paths)  # read again each time: a retry or resume adds lines

    @property
    def by_pdf(self) -> dict[str, ManifestRecord]:
        return {r.pdf: r for r in self.records}

    @property
    def summary(self) -> dict:
        return read_summary(self.paths)


LOCAL_TEXT = ("--engine", "text", "--executor", "local")  # submit's options for a run of the text engine here
FINISHED_WITH_FAILURES = 3  # the exit code of a finished run some of whose items failed (manage/verdict.py)


def run_local(pdfs: Path, out: Path, *extra, check: bool = True, expect: int = 0) -> LocalRun:
    """`hpcmarker submit --pdfs PDFS --out OUT --engine text --executor local EXTRA...`, run to the end
    here; with `check`, asserts it exited `expect` (0: every item ok; FINISHED_WITH_FAILURES where the
    test's inputs are meant to fail). `extra` may override the engine (a later flag wins)."""
    result = invoke("submit", "--pdfs", pdfs, "--out", out, *LOCAL_TEXT, *extra)
    if check:
        assert result.exit_code == expect, result.output
    return LocalRun(result, resolve_run(None))


def make_run(pdfs: Path, out: Path, *, register: bool = True, **request):
    """A run folder for PDFS, scanned, planned and with its scripts, nothing started (a `text` run on the
    local executor unless `request` says otherwise); registered, so `resume` and `status` find it."""
    from hpc_marker.submission.launch import prepare_run
    from hpc_marker.submission.request import SubmitRequest

    request = {"engine": "text", "executor": "local", **request}
    prepared = prepare_run(SubmitRequest.with_defaults(pdfs=pdfs, out=out, **request))
    if register:
        register_run(prepared.paths)
    return prepared


ROUNDED_HOURS = 0.5e-4  # status's GPU-hour figures are each rounded to 4 decimals (manage/accounting.run_totals)


def rounding_of(parts: dict) -> float:
    """How far the rounded GPU-time parts may sum from the rounded total: half a unit of the 4th decimal each."""
    return ROUNDED_HOURS * (len(parts) + 1)


WAIT_POLL_S = 0.5  # status is cheap next to a run (sacct, squeue, the commit logs); a run is seen done sooner


def wait_for(run_id: str, states: set[str], timeout_s: float = 600) -> dict:
    """`hpcmarker status RUN --json`, polled until the run's state is one of `states`."""
    deadline, status = time.time() + timeout_s, None
    while time.time() < deadline:
        status = json.loads(invoke("status", run_id, "--json").output)
        if status["state"] in states:
            return status
        time.sleep(WAIT_POLL_S)
    raise AssertionError(f"run {run_id} not in {states} after {timeout_s}s: {status}")


def wait_until(check: Callable[[], T], timeout_s: float, failure: str, poll_s: float = 0.1) -> T:
    """Call `check` every `poll_s` until it returns something true, and return that; after `timeout_s`, fail
    the test with `failure`."""
    deadline = time.time() + timeout_s
    while not (value := check()):
        assert time.time() < deadline, failure
        time.sleep(poll_s)
    return value
