"""What a local run tells its user (issue 14): the state, the exit code, one line per cause and the next
command, in `submit`, `status`, `logs` and the summary; reruns that honour what changed; one active run
per --out; no one-item tasks for --gpus far above the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from inputs import make_bad_pdfs
from runkit import (
    FINISHED_WITH_FAILURES,
    LOCAL_TEXT,
    documents,
    invoke,
    make_run,
    manifest_records,
    read_summary,
    run_folder,
    run_local,
    submit_from_a_terminal,
)

from hpc_marker.runstate.outlock import active_path, holder
from hpc_marker.runstate.record import RunRecord

INCOMPLETE = 4  # manage/verdict.py: status's exit code for an incomplete run


def edit_record(paths, **changes) -> None:
    """Change run.json as if the run had been submitted so (a node that lacks what the login node has)."""
    data = json.loads(paths.record.read_text())
    data.update(changes)
    paths.record.write_text(json.dumps(data))


@pytest.mark.slow
def test_a_task_that_cannot_start_its_engine_leaves_the_run_incomplete_with_the_reason(tmp_path, sample_pdfs):
    prepared = make_run(sample_pdfs, tmp_path / "out", gpus=2, run_id="noengine")
    edit_record(prepared.paths, engine="marker")  # marker-pdf is not installed in the jobs' environment
    result = invoke("resume", "noengine")
    assert result.exit_code == INCOMPLETE, result.output
    lines = result.output.splitlines()
    assert any(
        line.startswith("run noengine: incomplete: 6 of 6 items not converted (engine); Markdown in ") for line in lines
    ), lines
    reason = next(line.strip() for line in lines if line.startswith("  2 tasks (0,1): engine 'marker' cannot run on"))
    assert "marker" in reason and "then: hpcmarker resume noengine" in reason
    assert "Traceback" not in result.output
    status = invoke("status", "noengine", "--json")
    assert status.exit_code == INCOMPLETE and json.loads(status.output)["reasons"] == [reason]
    table = invoke("status", "noengine", terminal_width=400)
    assert table.exit_code == INCOMPLETE and reason in table.output
    summary = read_summary(prepared.paths)
    assert summary["state"] == "incomplete" and summary["reasons"][0] == reason
    logs = invoke("logs", "noengine")  # the first task that stopped early
    assert logs.exit_code == 0 and "==> task 0 stdout" in logs.output and "giving up: engine 'marker'" in logs.output
    # fixed (the engine is back), the next command finishes it
    edit_record(prepared.paths, engine="text")
    result = invoke("resume", "noengine")
    assert result.exit_code == 0, result.output
    assert "run noengine: finished: 6 ok of 6 items" in result.output


@pytest.mark.slow
def test_status_exit_codes_logs_and_the_out_folder_as_run(tmp_path, sample_pdfs):
    make_bad_pdfs(sample_pdfs / "bad")
    out = tmp_path / "out"
    run = run_local(sample_pdfs, out, "--gpus", "2", "--run-id", "mixed", expect=FINISHED_WITH_FAILURES)
    assert "run mixed: finished: 6 ok, " in run.output and "next: hpcmarker retry" not in run.output
    assert "6 failed items cannot be converted by `retry`: 6 cannot be read as they are" in run.output  # scan knew
    assert not active_path(out).exists()  # the run gave its --out back
    for name in ("mixed", str(out), str(run.paths.root)):  # a run id, the --out folder, the run folder
        status = invoke("status", name, "--json")
        assert status.exit_code == FINISHED_WITH_FAILURES and json.loads(status.output)["run_id"] == "mixed"
    logs = invoke("logs", "mixed", "--task", "1")
    assert logs.exit_code == 0 and "==> task 1 stdout (job " in logs.output
    assert "items finished" in logs.output and "TaskResult(" not in logs.output  # a sentence, not a repr
    follow = invoke("logs", "mixed", "--task", "0", "--follow")  # the run is over: prints the log and ends
    assert follow.exit_code == 0 and "==> task 0 stdout" in follow.output and "items finished" in follow.output
    for args, message in (
        (["--task", "7"], "--task 7: run mixed has tasks 0 to 1"),
        (["--service"], "run mixed has no LLM service"),
    ):
        wrong = invoke("logs", "mixed", *args)
        assert wrong.exit_code == 2 and message in wrong.output and len(wrong.output.splitlines()) == 1


@pytest.mark.slow
def test_an_engine_change_on_the_same_out_redoes_the_outputs(tmp_path, sample_pdfs):
    out = tmp_path / "out"
    run_local(sample_pdfs, out, "--gpus", "1")
    first = {md: md.stat().st_mtime_ns for md in documents(out)}
    again = invoke("submit", "--pdfs", sample_pdfs, "--out", out, "--engine", "text", "--executor", "local")
    assert again.exit_code == 0 and "all 6 PDFs already have outputs" in again.output
    other = run_local(sample_pdfs, out, "--gpus", "1", "--engine", "benchmark")  # another engine: redone
    assert len(manifest_records(other.paths)) == 6
    assert all(md.stat().st_mtime_ns > first[md] for md in documents(out))
    paginated = run_local(sample_pdfs, out, "--gpus", "1", "--engine", "benchmark", "--paginate")  # another option
    assert len(manifest_records(paginated.paths)) == 6


def test_a_second_submit_on_an_active_out_is_refused_naming_the_run(tmp_path, sample_pdfs):
    out = tmp_path / "out"
    first = make_run(sample_pdfs, out, run_id="first")  # holds --out: being submitted, no jobs yet
    assert holder(out).run_id == "first"
    second = invoke("submit", "--pdfs", sample_pdfs, "--out", out, "--engine", "text", "--executor", "local")
    assert second.exit_code == 2, second.output
    assert second.output.strip() == (
        f"Error: --out {out}: run first is still active there (being submitted); wait for it, or "
        "`hpcmarker cancel first`, or --force-concurrent to run both at once"
    )
    assert [p.name for p in (out / ".hpcmarker" / "runs").iterdir()] == ["first"]  # nothing made
    # once the holder's jobs are over, the folder is taken over by the next run
    from hpc_marker.runstate.outlock import acquire
    from hpc_marker.submission.launch import active_jobs_of

    dead = subprocess.Popen(["true"])
    dead.wait()
    edit_record(first.paths, jobs={"convert": [str(dead.pid)], "collect": []})
    acquire(out, "next", active_jobs_of(out))
    assert holder(out).run_id == "next"


def test_gpus_far_above_the_work_is_reduced_with_a_note(tmp_path, sample_pdfs):
    result = invoke(
        "submit",
        "--pdfs",
        sample_pdfs,
        "--out",
        tmp_path / "out",
        *LOCAL_TEXT,
        "--gpus",
        "5000",
        "--min-task-pages",
        "4",
        "--split-pages",
        "0",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert (
        "note: --gpus 5000: 2 tasks for 6 PDFs (11 pages; each task gets at least 4: --min-task-pages)" in result.output
    )
    assert "#SBATCH --array=0-1\n" in result.output
    many = invoke(
        "plan",
        "--pdfs",
        sample_pdfs,
        "--gpus",
        "5000",
        "--min-task-pages",
        "1",
        "--split-pages",
        "0",
        "--format",
        "json",
    )
    assert (
        many.exit_code == 0
        and "note: --gpus 5000: 6 tasks for 6 PDFs (6 work items, one per task at most)" in many.output
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split-pages", "-5"], "--split-pages -5: must be 0 (never split) or a number of pages"),
        (["--lease-seconds", "0"], "--lease-seconds 0: must be positive"),
        (["--min-task-pages", "0"], "--min-task-pages 0: must be at least 1"),
    ],
)
def test_nonsense_numbers_are_refused(tmp_path, sample_pdfs, args, message):
    result = invoke(
        "submit", "--pdfs", sample_pdfs, "--out", tmp_path / "out", "--engine", "text", "--executor", "local", *args
    )
    assert result.exit_code == 2 and message in result.output and len(result.output.splitlines()) == 1
    assert not (tmp_path / "out" / ".hpcmarker").exists()


@pytest.mark.slow
def test_resume_takes_new_resources_and_refuses_bad_ones(tmp_path, sample_pdfs):
    prepared = make_run(sample_pdfs, tmp_path / "out", gpus=2, run_id="again")
    for args, message in (
        (["--time", "soon"], "--time 'soon'"),
        (["--gpus", "0"], "--gpus 0: must be at least 1"),
        (["--cpus-per-task", "0"], "--cpus-per-task 0: must be at least 1"),
        (["--item-timeout", "never"], "--item-timeout 'never'"),
    ):
        result = invoke("resume", "again", *args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert RunRecord.from_json(json.loads(prepared.paths.record.read_text())).time_limit == prepared.record.time_limit
    result = invoke(
        "resume",
        "again",
        "--time",
        "3:00:00",
        "--mem",
        "8G",
        "--cpus-per-task",
        "1",
        "--item-timeout",
        "600",
        "--gpus",
        "1",
    )
    assert result.exit_code == 0, result.output
    record = RunRecord.from_json(json.loads(prepared.paths.record.read_text()))
    assert (record.time_limit, record.mem, record.cpus_per_task, record.item_timeout, record.gpus) == (
        "3:00:00",
        "8G",
        1,
        "600",
        1,
    )
    assert "resubmitted tasks 0 as" in result.output  # --gpus 1: one task, which steals the other's share
    assert "finished: 6 ok of 6 items" in result.output


def _submit_in_background(pdfs: Path, out: Path, run_id: str) -> subprocess.Popen:
    return submit_from_a_terminal(pdfs, out, run_id, 1.5)


def _wait_for_a_record(out: Path, run_id: str) -> None:
    paths = run_folder(out, run_id)
    deadline = time.time() + 120
    while not (paths.manifests.exists() and manifest_records(paths)):
        assert time.time() < deadline, "the run never converted anything"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cancel", "ctrl-c"])
def test_a_stopped_local_run_ends_incomplete_with_the_next_command(tmp_path, sample_pdfs, how):
    out = tmp_path / "out"
    submit = _submit_in_background(sample_pdfs, out, "stopme")
    try:
        _wait_for_a_record(out, "stopme")
        if how == "cancel":  # from another terminal
            cancel = invoke("cancel", "stopme")
            assert cancel.exit_code == 0, cancel.output
            ids = cancel.output.split(": ", 1)[1].split(", ")
            assert len(ids) == len(set(ids)), cancel.output  # each job once
        else:  # the terminal's Ctrl-C reaches the whole foreground process group
            os.killpg(submit.pid, signal.SIGINT)
        output, _ = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
    assert submit.returncode == (INCOMPLETE if how == "cancel" else 130), output
    assert "Traceback" not in output
    assert "run stopme: incomplete: " in output and "next: hpcmarker resume stopme" in output, output
    assert "cancelled" in output
    status = invoke("status", "stopme", "--json")
    assert status.exit_code == INCOMPLETE and json.loads(status.output)["state"] == "incomplete"
    assert not active_path(out).exists()  # the folder is free again
    resumed = invoke("resume", "stopme", env={"HPCMARKER_BENCH_SECONDS_PER_PAGE": "0.01"})
    assert resumed.exit_code == 0 and "finished: 6 ok of 6 items" in resumed.output, resumed.output
    status = invoke("status", "stopme", "--json")
    assert status.exit_code == 0 and {t["state"] for t in json.loads(status.output)["tasks"]} == {"COMPLETED"}


@pytest.mark.slow
def test_a_name_too_long_for_its_side_file_is_flagged_and_converts(tmp_path, sample_pdfs):
    import shutil

    pdfs = tmp_path / "long"
    pdfs.mkdir()
    name = "n" * 246 + ".pdf"  # 250 bytes: a legal name, but not with `_meta.json` after its stem
    shutil.copy(sample_pdfs / "en" / "upref.pdf", pdfs / name)
    shutil.copy(sample_pdfs / "zh" / "example-single.pdf", pdfs / ("z" * 246 + ".pdf"))
    out = tmp_path / "out"
    run = run_local(pdfs, out, "--gpus", "1", "--split-pages", "1")  # parts of a split PDF too
    assert "note: 2 PDF names are too long for `<name>_meta.json` (255 bytes)" in run.output
    assert (out / name[:-4] / f"{name[:-4]}.md").is_file()
    again = invoke(
        "submit", "--pdfs", pdfs, "--out", out, "--engine", "text", "--executor", "local", "--split-pages", "1"
    )
    assert again.exit_code == 0 and "all 2 PDFs already have outputs" in again.output  # its metadata is found
