"""util/logs.py: a job's log lines carry date, time, level and job; the CLI's -q keeps only warnings of its
diagnostics and -v adds the debug ones, on stderr, while what a command prints for its user stays on stdout."""

from __future__ import annotations

import logging
import re

import pytest
from runkit import invoke, make_run, read_record, run_local

from hpc_marker.util.logs import JobEntry, configure

JOB_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) (task \d+|collect|llm \d+): "
)


def _job(role: str, *index: int) -> str:
    logging.getLogger("hpc_marker.example").info("working")
    logging.getLogger("hpc_marker.example").debug("details")
    return role


def test_a_job_logs_to_stdout_with_date_time_level_and_its_name(capsys):
    assert JobEntry(_job, "task")("RUN", 3) == "RUN"
    out, err = capsys.readouterr()
    assert JOB_LINE.match(out) and out.endswith(" INFO task 3: working\n") and err == "", (out, err)
    configure(0, job="collect")
    configure(0, job="collect")  # again: one handler, one line
    logging.getLogger("hpc_marker.example").warning("careful")
    assert re.fullmatch(r"\S+ \S+ WARNING collect: careful\n", capsys.readouterr().out)


def test_the_cli_logs_to_stderr_info_bare_and_other_levels_named(capsys):
    configure(1)
    logger = logging.getLogger("hpc_marker.example")
    logger.debug("a detail")
    logger.info("fetching x")
    logger.warning("careful")
    assert capsys.readouterr() == ("", "hpcmarker: debug: a detail\nfetching x\nhpcmarker: warning: careful\n")
    configure(-1)
    logger.info("fetching y")
    logger.warning("still said")
    assert capsys.readouterr().err == "hpcmarker: warning: still said\n"


@pytest.mark.slow
def test_a_local_runs_job_logs_carry_timestamps(sample_pdfs, tmp_path):
    run = run_local(sample_pdfs, tmp_path / "out", "--gpus", "1")
    assert not JOB_LINE.search(run.result.stdout)  # the command's own output is as it was
    task = [line for line in (run.paths.logs / "task-0.out").read_text().splitlines() if line]
    ours = task  # every line is ours: no runner's lines of its own
    assert all(JOB_LINE.match(line) for line in ours), task
    assert any(JOB_LINE.match(line) and "task 0: workers per GPU" in line for line in ours), task
    collector_id = read_record(run.paths)["jobs"]["collect"][0]
    collector = next(run.paths.jobs.glob(f"{collector_id}_*log.out")).read_text().splitlines()
    ours = [line for line in collector if line]
    assert ours and all(JOB_LINE.match(line) for line in ours), collector
    assert any(" INFO collect: report: " in line for line in ours), collector


def test_quiet_and_verbose_set_what_the_diagnostics_say(sample_pdfs, tmp_path):
    run_id = make_run(sample_pdfs, tmp_path / "out").paths.run_id
    said = {flags: invoke(*flags, "collect", run_id) for flags in [(), ("-q",), ("--verbose",)]}
    assert all(result.exit_code == 0 for result in said.values()), [r.output for r in said.values()]
    assert len({result.stdout for result in said.values()}) == 1  # what collect prints for its user: unchanged
    assert said[()].stdout.startswith("wrote ") and "missing of" not in said[()].stdout
    normal, quiet, verbose = (said[flags].stderr for flags in said)
    assert "missing of" in normal and "debug" not in normal
    assert "missing of" not in quiet
    assert "missing of" in verbose and re.search(r"^hpcmarker: debug: run \S+: 0 manifest lines", verbose, re.M)
