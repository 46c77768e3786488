"""Every command hpcmarker prints runs as printed (issue 19, item 3): the commands that real local runs print
(submit's verdict, `status` of the run and of its --out folder, the report) are collected and each is read
the way bash reads it, then by the command line itself; the OCR follow-up is run. A submission that dies
before its jobs are recorded (here: its stdout a broken pipe) leaves no run that `status OUT` or `export
OUT` would choose; `export OUT` exports the folder's finished results."""

from __future__ import annotations

import html
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from inputs import EXAMPLES, raw_pdf
from runkit import invoke, run_folder, run_local

from hpc_marker.cli import cli
from hpc_marker.runstate.index import register_run, resolve_run
from hpc_marker.runstate.layout import RUNS_SUBDIR

OCR_HINT = "hpcmarker retry first --select no-text,garbled --engine marker --force-ocr"


def printed_commands(text: str) -> list[str]:
    """Each `hpcmarker ...` in `text`: from `hpcmarker ` to the end of its line, or to a closing backtick."""
    found = []
    for line in text.splitlines():
        for match in re.finditer(r"(`?)(hpcmarker [^\n]*)", line):
            command = match.group(2)
            if match.group(1):
                command = command.split("`", 1)[0]
            found.append(command.strip())
    return found


def bash_words(command: str) -> list[list[str]]:
    """The commands bash would run for `command`: words split and unquoted as bash does, split at `&&`
    (the only operator a printed command may hold: no pipe, no `;`, no redirection)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word == "&&":
            commands.append([])
            continue
        assert not set(word) <= set("();<>|&"), f"{command!r}: bash reads {word!r} as an operator"
        commands[-1].append(word)
    return commands


def parse_as_cli(words: list[str]) -> None:
    """`words` (hpcmarker ARGS) parsed by the command line, as it would be when run: each option and its
    value, callbacks included; a bad one raises."""
    assert words[0] == "hpcmarker", words
    with cli.make_context("hpcmarker", words[1:]) as ctx:
        name, command, rest = cli.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        with command.make_context(name, rest, parent=ctx):
            pass


def two_pass_inputs(tmp_path: Path) -> Path:
    """The sample PDFs (one has garbled pages), a scanned page without a text layer, and a PDF that fails."""
    pdfs = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, pdfs)
    (pdfs / "scan.pdf").write_bytes(raw_pdf(b""))
    (pdfs / "broken.pdf").write_bytes(b"not a pdf\n")
    return pdfs


@pytest.fixture
def finished(tmp_path):
    """A local text run, finished with a failed item and flagged pages: the test's own, to change."""
    out = tmp_path / "out"
    run = run_local(two_pass_inputs(tmp_path), out, "--run-id", "first", expect=3)
    return out, run


@pytest.fixture(scope="module")
def _finished_once(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:  # as isolated_state (conftest.py) does for each test
        patch.setenv("HPCMARKER_STATE_DIR", str(tmp / "state"))
        patch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        patch.setenv("HPCMARKER_LOCAL_CORES", "64")
        out = tmp / "out"
        return out, run_local(two_pass_inputs(tmp), out, "--run-id", "first", expect=3)


@pytest.fixture
def finished_shared(_finished_once):
    """`finished`, one run for the module's tests that leave it as it is (no follow-up run; at most a run
    folder never submitted, which no command takes for the --out's latest), in this test's run index."""
    register_run(_finished_once[1].paths)
    return _finished_once


def test_every_printed_command_runs_as_printed(finished_shared):
    out, run = finished_shared
    notes = re.findall(r'<p class="note">(.*?)</p>', (run.paths.root / "report.html").read_text(), re.DOTALL)
    texts = [
        run.output,
        invoke("status", "first").output,
        invoke("status", out).output,
        html.unescape("\n".join(notes)),
    ]
    commands = [command for text in texts for command in printed_commands(text)]
    assert OCR_HINT in commands, commands
    assert "hpcmarker retry first" not in commands, commands  # broken.pdf is no PDF: known at scan, retry cannot help
    for command in set(commands):
        for words in bash_words(command):
            parse_as_cli(words)
    for text in texts[:3]:  # the whole hint on one line, even where rich lays a table out 80 columns wide
        assert any(line.endswith(OCR_HINT) for line in text.splitlines()), text


@pytest.mark.slow
def test_the_printed_ocr_follow_up_selects_both_kinds(finished, monkeypatch):
    out, _run = finished
    monkeypatch.setattr("hpc_marker.submission.launch.check_engine", lambda *_: None)  # no marker here
    listed = invoke(*bash_words(OCR_HINT)[0][1:], "--dry-run")  # as printed, but submitting nothing
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == [
        "run first: 2 documents selected by --select no-text,garbled",
        "  scan.pdf",
        "  zh/example-single.pdf",
    ]
    result = invoke("retry", "first", "--select", "no-text,garbled", "--engine", "benchmark", "--run-id", "second")
    assert result.exit_code == 0, result.output
    assert json.loads(run_folder(out, "second").record.read_text())["parent"]["select"] == "no-text,garbled"
    assert resolve_run(str(out)).run_id == "second"


@pytest.mark.parametrize("value", ["bogus", "no-text|garbled", "no-text,,bogus"])
def test_a_bad_select_is_one_line_and_exit_2(finished_shared, value):
    result = invoke("retry", "first", "--select", value)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "--select" in result.output and "no-text, garbled, partial, failed" in result.output


def test_partial_selection_says_nothing_of_min_share(finished_shared):
    result = invoke("retry", "first", "--select", "partial")
    assert result.exit_code == 0 and "no document selected by --select partial" in result.output
    assert "min-share" not in result.output, result.output


@pytest.mark.slow
def test_a_submission_killed_by_its_stdout_leaves_no_run_behind(finished):
    """The issue's paste: bash pipes the follow-up into a command that does not exist; hpcmarker dies
    writing to the closed pipe (exit 1). Nothing of it may remain: `status OUT` and `export OUT` still see
    the finished run, and the next follow-up is not refused as if that one were still being submitted."""
    out, _run = finished
    pasted = (
        f"{shlex.join([sys.executable, '-m', 'hpc_marker', 'retry', 'first', '--select', 'no-text'])}"
        " | no-such-command-garbled --engine marker --force-ocr; exit ${PIPESTATUS[0]}"
    )
    died = subprocess.run(["bash", "-c", pasted], check=False, capture_output=True, text=True, timeout=300)
    assert died.returncode == 1, died.stderr
    assert sorted(p.name for p in (out / RUNS_SUBDIR).iterdir()) == ["first"]
    assert resolve_run(str(out)).run_id == "first"
    status = invoke("status", out)
    assert status.exit_code == 3 and "run first" in status.output, status.output
    again = invoke("retry", "first", "--select", "no-text", "--run-id", "again")
    assert again.exit_code == 0, again.output


def test_a_run_folder_never_submitted_is_not_the_outs_latest(finished_shared):
    from runkit import make_run

    out, _run = finished_shared
    make_run(out.parent / "pdfs", out, register=False, force=True, run_id="never")  # created, never given jobs
    assert resolve_run(str(out)).run_id == "first"


@pytest.mark.slow
def test_export_of_an_out_folder_takes_its_first_run_and_follow_ups(finished, tmp_path):
    out, _run = finished
    assert invoke("retry", "first", "--select", "no-text", "--engine", "benchmark", "--run-id", "ocr").exit_code == 0
    exported = invoke("export", out, "--format", "parquet", "--to", tmp_path / "ds")
    assert exported.exit_code == 0, exported.output
    frame = pd.read_parquet(tmp_path / "ds").set_index("path")
    assert len(frame) == 7 and frame.loc["scan.pdf", "run_id"] == "ocr", frame[["run_id", "status"]]
    assert set(frame.drop(index="scan.pdf")["run_id"]) == {"first"}
    latest = invoke("export", "--format", "jsonl", "--to", tmp_path / "latest")  # the default: the same
    assert latest.exit_code == 0 and "7 rows" in latest.output, latest.output


@pytest.mark.slow
def test_export_of_a_run_with_nothing_converted_is_not_a_silent_success(tmp_path):
    from runkit import make_run

    pdfs = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, pdfs)
    prepared = make_run(pdfs, tmp_path / "out", run_id="unstarted")
    result = invoke("export", prepared.paths.root, "--format", "jsonl", "--to", tmp_path / "ds")
    assert result.exit_code == 2 and "nothing converted" in result.output, result.output
    assert not (tmp_path / "ds").exists()
    failed = tmp_path / "bad"
    failed.mkdir()
    (failed / "broken.pdf").write_bytes(b"not a pdf\n")
    run_local(failed, tmp_path / "out2", "--run-id", "allbad", expect=3)
    zero = invoke("export", "allbad", "--format", "jsonl", "--to", tmp_path / "ds2")
    assert zero.exit_code == 3 and "0 rows" in zero.output and "1 failed" in zero.output, zero.output
