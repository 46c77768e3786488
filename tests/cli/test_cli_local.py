"""The command line, run locally (no Slurm): bad input, dry runs, a whole run with bad files."""

from __future__ import annotations

import json
import shutil

import pytest
from inputs import EXAMPLES, make_bad_pdfs
from runkit import FINISHED_WITH_FAILURES, LOCAL_TEXT, invoke, run_local

from hpc_marker.submission.scripts import split_dry_run


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pdfs", "{tmp}/missing"], "no such folder"),
        (["--pdfs", "{tmp}/empty"], "no PDF files found"),
        (
            ["--pdfs", "{pdfs}", "--template", "nope"],
            "unknown template 'nope'; available templates: apptainer, generic",
        ),
        (["--pdfs", "{pdfs}", "--out", "/proc/forbidden"], "cannot write there"),
        (["--pdfs", "{pdfs}", "--engine", "text", "--force-ocr"], "--force-ocr needs --engine marker"),
        (["--pdfs", "{pdfs}", "--time", "soon"], "--time 'soon'"),
        (["--pdfs", "{pdfs}", "--run-id", "../escape"], "--run-id"),
        (["--pdfs", "{pdfs}", "--marker-config", "{tmp}/missing.json"], "cannot read"),
        (["--pdfs", "{pdfs}", "--item-timeout", "soonish"], "--item-timeout 'soonish': use auto, off"),
        (["--pdfs", "{pdfs}", "--engine", "text", "--worker-memory", "lots"], "--worker-memory 'lots': use a size"),
        (
            ["--pdfs", "{pdfs}", "--engine", "marker", "--worker-memory", "8G"],
            "for marker, limit the job's memory with --mem",
        ),
    ],
)
def test_bad_input_is_a_one_line_error_with_exit_code_2(tmp_path, sample_pdfs, args, message):
    (tmp_path / "empty").mkdir()
    base = ["submit", "--out", str(tmp_path / "out"), "--engine", "text", "--executor", "local"]
    filled = [a.format(tmp=tmp_path, pdfs=sample_pdfs) for a in args]
    result = invoke(*base, *filled)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / ".hpcmarker").exists()  # nothing created, nothing submitted


@pytest.mark.slow
def test_dry_run_prints_the_scripts_and_creates_nothing(tmp_path, sample_pdfs):
    out = tmp_path / "out"
    result = invoke(
        "submit",
        "--pdfs",
        str(sample_pdfs),
        "--out",
        str(out),
        "--gpus",
        "3",
        *LOCAL_TEXT,
        "--run-id",
        "dry1",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    scripts = split_dry_run(result.output)
    assert set(scripts) == {"convert", "collect"}
    assert "#SBATCH --array=0-2\n" in scripts["convert"]
    assert "#SBATCH --gres=gpu:1\n" in scripts["convert"]
    assert not (out / ".hpcmarker" / "runs" / "dry1").exists()
    # a real submit of the same run writes exactly these scripts
    run_local(sample_pdfs, out, "--gpus", "3", "--run-id", "dry1")
    run = out / ".hpcmarker" / "runs" / "dry1"
    for role, text in scripts.items():
        assert (run / "scripts" / f"{role}.sbatch").read_text() == text


@pytest.mark.slow
def test_local_run_converts_good_pdfs_and_records_bad_ones(tmp_path, sample_pdfs):
    expected_bad = make_bad_pdfs(sample_pdfs / "bad")
    # same file name in two folders must not collide
    shutil.copy(EXAMPLES / "zh" / "6-7b.pdf", sample_pdfs / "en" / "6-7b.pdf")
    odd = sample_pdfs / "odd name $(x) `y` 'q'"
    odd.mkdir()
    shutil.copy(EXAMPLES / "en" / "upref.pdf", odd / "文档 copy.PDF")
    out = tmp_path / "out"
    run = run_local(sample_pdfs, out, "--gpus", "2", expect=FINISHED_WITH_FAILURES)
    paths, records = run.paths, run.records
    by_pdf = {r.pdf: r for r in records}
    assert len(records) == len(by_pdf) == 8 + len(expected_bad)  # one line per input
    for name, expected in expected_bad.items():
        record = by_pdf[f"bad/{name}"]
        assert record.status == expected.status and expected.reason in record.error
    good = [r for r in records if not r.pdf.startswith("bad/")]
    assert all(r.status == "ok" for r in good)
    for r in good:
        md = out / r.output
        assert md.is_file() and md.stat().st_size > 0
        assert md.read_text().startswith("\n\n{0}" + "-" * 48)
    assert (out / "en" / "6-7b" / "6-7b.md").read_text() == (out / "zh" / "6-7b" / "6-7b.md").read_text()
    assert (odd.relative_to(sample_pdfs) / "文档 copy").as_posix() in by_pdf[
        (odd.relative_to(sample_pdfs) / "文档 copy.PDF").as_posix()
    ].output
    summary = run.summary
    assert summary["ok"] == 8 and summary["failed"] == len(expected_bad) and summary["missing"] == []
    assert {f["pdf"] for f in summary["failures"]} == {f"bad/{n}" for n in expected_bad}
    assert paths.manifest_csv.read_text().count("\n") == len(records) + 1
    assert not list(out.rglob(".*.partial-*"))

    status = json.loads(invoke("status", "--json").output)
    assert status["state"] == "finished"
    assert status["ok"] == 8 and status["failed"] == len(expected_bad) and status["pending"] == 0
    assert {t["state"] for t in status["tasks"]} == {"COMPLETED"}


def test_plan_json_lists_items_and_pages(sample_pdfs):
    result = invoke("plan", "--pdfs", str(sample_pdfs), "--gpus", "2", "--format", "json")
    data = json.loads(result.output)
    assert [t["index"] for t in data["tasks"]] == [0, 1]
    assert sum(t["pages"] for t in data["tasks"]) == data["total_pages"] == 11
    item = data["tasks"][0]["items"][0]
    assert {"pdf", "page_start", "page_stop"} <= set(item)


def test_status_of_unknown_run_is_a_clear_error():
    result = invoke("status", "no-such-run")
    assert result.exit_code == 2 and "no such run" in result.output
    result = invoke("status")
    assert result.exit_code == 2 and "no runs yet" in result.output


@pytest.mark.slow
def test_many_unreadable_pdfs_are_named_up_to_a_limit_then_counted(tmp_path):
    from hpc_marker.cli.run import WILL_FAIL_LINES

    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    shutil.copy(EXAMPLES / "en" / "upref.pdf", pdfs / "good.pdf")
    for n in range(WILL_FAIL_LINES + 5):
        (pdfs / f"empty-{n:02d}.pdf").write_bytes(b"")
    result = invoke(
        "submit", "--pdfs", pdfs, "--out", tmp_path / "out", *LOCAL_TEXT, "--gpus", "1", "--run-id", "many-bad"
    )
    lines = result.output.splitlines()
    assert sum(line.startswith("  will fail: ") for line in lines) == WILL_FAIL_LINES
    assert "  ... and 5 more PDFs that will fail" in result.output
    records = [
        json.loads(line)
        for path in (tmp_path / "out/.hpcmarker/runs/many-bad/manifests").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(r["status"] for r in records).count("ok") == 1 and len(records) == WILL_FAIL_LINES + 6
