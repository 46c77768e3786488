"""Submitting past MaxArraySize, against stand-in Slurm commands (no cluster): several arrays that together
cover every task, the collector after all of them, --dry-run byte for byte, refusals before anything is
created, a half-submitted run taken back, cancel and resume treating the arrays as one run."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from inputs import raw_pdf

from hpc_marker.cli import cli
from hpc_marker.runstate.index import resolve_run
from hpc_marker.submission.scripts import split_dry_run
from hpc_marker.util.jobrun import load_call

TOOLS = {
    "sinfo": 'case "$*" in *"%P|%G"*) echo "gpu*|gpu:4" ;; *) echo "gpu*" ;; esac',
    "scontrol": 'echo "MaxArraySize            = ${FAKE_MAX_ARRAY_SIZE}"; '
    'echo "AccountingStorageEnforce = ${FAKE_ENFORCE:-none}"',
    "sacctmgr": 'echo "$(id -un)|proj|proj|||${FAKE_MAX_SUBMIT:-}"',
    "squeue": 'echo "$*" >> "$FAKE_LOG/squeue.log"; cat "$FAKE_LOG/queue" 2>/dev/null || true',  # as the test queues
    "scancel": 'echo "$*" >> "$FAKE_LOG/scancel.log"; rm -f "$FAKE_LOG/queue"',
    "sacct": 'echo "JobID|State|NodeList"',
    "sbatch": '''if [ "$1" = "--test-only" ]; then cat > /dev/null; echo "--test-only" >> "$FAKE_LOG/test-only.log"
  if [ -n "${FAKE_TEST_ONLY_ERROR:-}" ]; then echo "$FAKE_TEST_ONLY_ERROR" >&2; exit 1; fi
  echo "sbatch: Job 1 to start at 2026-01-01T00:00:00 using 1 processors on nodes n1 in partition gpu" >&2; exit 0; fi
n=$(( $(cat "$FAKE_LOG/count" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE_LOG/count"
script="${@: -1}"; cp "$script" "$FAKE_LOG/script-$n"; echo "${*:1:$#-1}" > "$FAKE_LOG/argv-$n"
if [ "$n" = "${FAKE_FAIL_AT:-0}" ]; then echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1; fi
echo "Submitted batch job $((100 + n))"''',
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """Stand-ins for Slurm's commands on PATH; what sbatch was given lands in the returned folder."""
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm-log"
    bin_dir.mkdir()
    log.mkdir()
    for name, body in TOOLS.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/bash\n{body}\n")
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_MAX_ARRAY_SIZE", "4")
    return log


@pytest.fixture
def ten_pdfs(tmp_path) -> Path:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    for i in range(10):
        (folder / f"doc{i:02d}.pdf").write_bytes(raw_pdf(b"BT /F1 12 Tf 72 700 Td (page %d) Tj ET" % i))
    return folder


def submit(pdfs: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        cli,
        [
            "submit",
            "--pdfs",
            str(pdfs),
            "--out",
            str(out),
            "--gpus",
            "10",
            "--engine",
            "text",
            "--executor",
            "slurm",
            "--run-id",
            "big",
            *extra,
        ],
        catch_exceptions=False,
    )


def sbatch_calls(log: Path) -> list[tuple[str, str]]:
    """(argv before the script, script text) of each sbatch call, in order."""
    count = int((log / "count").read_text()) if (log / "count").exists() else 0
    return [((log / f"argv-{n}").read_text().strip(), (log / f"script-{n}").read_text()) for n in range(1, count + 1)]


def test_tasks_past_max_array_size_are_submitted_as_several_arrays_of_one_run(tmp_path, fake_slurm, ten_pdfs):
    out = tmp_path / "out"
    dry = submit(ten_pdfs, out, "--dry-run", "--max-running", "5")
    assert dry.exit_code == 0, dry.output
    scripts = split_dry_run(dry.output)
    assert list(scripts) == ["convert-0", "convert-1", "convert-2", "collect"]
    assert [next(line for line in scripts[name].splitlines() if "--array" in line) for name in list(scripts)[:3]] == [
        "#SBATCH --array=0-3%2",
        "#SBATCH --array=0-3%2",
        "#SBATCH --array=0-1%1",
    ]  # K=5 shared 2+2+1
    assert (
        "sbatch --dependency=afterany:<convert-0 job id>:<convert-1 job id>:<convert-2 job id> collect.sbatch"
        in dry.output
    )
    assert not (out / ".hpcmarker").exists() and sbatch_calls(fake_slurm) == []

    result = submit(ten_pdfs, out, "--max-running", "5")
    assert result.exit_code == 0, result.output
    assert "submitted: arrays 101, 102, 103 (10 tasks: 4 + 4 + 2), collector 104" in result.output
    calls = sbatch_calls(fake_slurm)
    assert [argv for argv, _ in calls] == ["", "", "", "--dependency=afterany:101:102:103"]
    assert [text for _, text in calls] == list(scripts.values())  # --dry-run printed exactly what was sent
    paths = resolve_run("big")
    assert sorted(p.name for p in paths.scripts.iterdir()) == sorted(f"{name}.sbatch" for name in scripts)
    record = json.loads(paths.record.read_text())
    assert record["jobs"]["convert"] == [
        "101_0",
        "101_1",
        "101_2",
        "101_3",
        "102_0",
        "102_1",
        "102_2",
        "102_3",
        "103_0",
        "103_1",
    ]
    assert record["jobs"]["collect"] == ["104"] and record["max_running"] == 5
    # each array task's index in its array's one pickled call is its global task index
    for task, job_id in enumerate(record["jobs"]["convert"]):
        array, index = job_id.split("_")
        call = load_call(paths.jobs / f"{array}.call")
        assert (*call.args, call.tasks[int(index)]) == (str(paths.root), task), job_id
    assert len(list(paths.jobs.glob("*.call"))) == 4  # three arrays and the collector
    # the collector's runner asks for Arrow's jemalloc pool before its call loads (util/memory.py); a task's does not
    asked: dict[str, str] = {}
    assert load_call(paths.jobs / "104.call", asked).function.role == "collect"
    assert asked == {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}
    asked.clear()
    assert load_call(paths.jobs / "101.call", asked).environ is None and asked == {}
    (fake_slurm / "queue").write_text(
        "".join(f"{job}|PENDING|Priority|(null)\n" for job in ("101_[0-3]", "102_[0-3]", "103_[0-1]", "104"))
    )
    cancelled = CliRunner().invoke(cli, ["cancel", "big"], catch_exceptions=False)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output.strip() == "cancelled run big: 101_[0-3], 102_[0-3], 103_[0-1], 104"
    assert (fake_slurm / "scancel.log").read_text().split() == ["101", "102", "103", "104"]


def test_resume_resubmits_the_unfinished_tasks_as_arrays_within_the_limit(tmp_path, fake_slurm, ten_pdfs):
    assert submit(ten_pdfs, tmp_path / "out").exit_code == 0
    resumed = CliRunner().invoke(cli, ["resume", "big"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert "resubmitted tasks 0-9 as 105_[0-3], 106_[0-3], 107_[0,1], collector 108" in resumed.output
    calls = sbatch_calls(fake_slurm)
    assert len(calls) == 8 and calls[-1][0] == "--dependency=afterany:105:106:107"
    assert ["#SBATCH --array=0-3" in text for _, text in calls[4:7]] == [True, True, False]
    record = json.loads(resolve_run("big").record.read_text())
    assert record["jobs"]["convert"][0] == "105_0" and record["jobs"]["convert"][9] == "107_1"
    for task, job_id in enumerate(record["jobs"]["convert"]):
        array, index = job_id.split("_")
        assert load_call(resolve_run("big").jobs / f"{array}.call").tasks[int(index)] == task


@pytest.mark.parametrize(
    "env, args, message",
    [
        (
            {"FAKE_ENFORCE": "associations,limits", "FAKE_MAX_SUBMIT": "10"},
            [],
            "10 tasks need 11 jobs (each array task counts, and 1 more for the collector and service), "
            "but MaxSubmitJobs is 10: at most 9 tasks fit now (--gpus)",
        ),
        (
            {},
            ["--max-running", "2"],
            "--max-running 2: 10 tasks need 3 arrays (MaxArraySize is 4), each running at "
            "least one task at once: use --max-running 3 or more",
        ),
        ({}, ["--max-running", "0"], "--max-running 0: must be at least 1"),
    ],
)
def test_a_request_no_limit_fits_is_refused_before_anything_is_created(
    tmp_path, fake_slurm, ten_pdfs, monkeypatch, env, args, message
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for dry in ([], ["--dry-run"]):
        result = submit(ten_pdfs, tmp_path / "out", *args, *dry)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == f"Error: {message}"
    assert not (tmp_path / "out" / ".hpcmarker").exists() and sbatch_calls(fake_slurm) == []


def test_association_limits_are_not_applied_where_the_cluster_does_not_enforce_them(
    tmp_path, fake_slurm, ten_pdfs, monkeypatch
):
    monkeypatch.setenv("FAKE_MAX_SUBMIT", "10")  # FAKE_ENFORCE unset: AccountingStorageEnforce = none
    assert submit(ten_pdfs, tmp_path / "out", "--dry-run").exit_code == 0


def test_a_half_submitted_run_is_taken_back(tmp_path, fake_slurm, ten_pdfs, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_AT", "2")  # the second array is refused by sbatch
    result = submit(ten_pdfs, tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert "QOSMaxSubmitJobPerUserLimit; cancelled what it had queued (101)" in result.output
    assert (fake_slurm / "scancel.log").read_text().split() == ["101"]
    assert len(sbatch_calls(fake_slurm)) == 2  # no collector after a refused array
    # nothing of the refused run is left: no run folder, no entry in the user's runs, the --out free
    assert list((tmp_path / "out" / ".hpcmarker" / "runs").iterdir()) == []
    assert not (tmp_path / "out" / ".hpcmarker" / "active").exists()
    status = CliRunner().invoke(cli, ["status"])
    assert status.exit_code == 2 and "no runs yet" in status.output


def test_a_request_slurm_could_never_run_is_refused_before_anything_is_made(
    tmp_path, fake_slurm, ten_pdfs, monkeypatch
):
    monkeypatch.setenv(
        "FAKE_TEST_ONLY_ERROR",
        "sbatch: error: Batch job submission failed: Requested node configuration is not available",
    )
    result = submit(ten_pdfs, tmp_path / "out", "--cpus-per-task", "64")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "Error: Slurm would never run the convert job: Batch job submission failed: Requested node configuration is "
        "not available; ask for less (--cpus-per-task, --mem, --time, GRES) or another --partition"
    )
    assert sbatch_calls(fake_slurm) == []  # nothing queued
    assert not (tmp_path / "out" / ".hpcmarker").exists()  # nothing created


def test_a_local_run_says_that_max_running_is_for_slurm():
    from types import SimpleNamespace

    from hpc_marker.executors.local import LocalExecutor

    layout = LocalExecutor().task_arrays(SimpleNamespace(max_running=3, jobs={}), [0, 1, 2, 3], other_jobs=1)
    assert [a.tasks for a in layout.arrays] == [(0, 1, 2, 3)] and layout.arrays[0].throttle is None
    assert layout.note.startswith("note: --max-running 3 applies to Slurm runs")
    assert LocalExecutor().task_arrays(SimpleNamespace(max_running=None, jobs={}), [0], other_jobs=1).note is None
