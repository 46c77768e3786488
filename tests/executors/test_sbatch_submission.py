"""Submitting a rendered script is ours (executors/slurm.py: submit_script), against a stand-in `sbatch`:
the script goes to sbatch as is, its one call (an array's too) is pickled where the job runner loads it
(`<job id>.call`), and a refused submission leaves nothing behind. The parsers of what sbatch and
sacct answer (slurm/parse.py) no longer borrow submitit's."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from hpc_marker.executors.slurm import job_log_paths, submit_script
from hpc_marker.slurm.commands import SlurmError
from hpc_marker.slurm.parse import expand_queued_id, parse_sacct, parse_submitted
from hpc_marker.util.jobrun import JobCall, job_logs, load_call

SBATCH = """#!/bin/bash
echo "$*" > "$FAKE_LOG/argv"; cp "${@: -1}" "$FAKE_LOG/script"
if [ -n "${FAKE_REFUSE:-}" ]; then echo "sbatch: error: $FAKE_REFUSE" >&2; exit 1; fi
echo "Submitted batch job 42"
"""


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    tool = bin_dir / "sbatch"
    tool.write_text(SBATCH)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def test_an_array_is_queued_as_rendered_with_one_call_where_its_runner_loads_it(tmp_path, fake_sbatch):
    jobs = tmp_path / "jobs"
    ids = submit_script(
        jobs,
        "#!/bin/bash\n#SBATCH --array=0-2\nexec true\n",
        JobCall(divmod, (100,)),
        array=((0, 1, 2), (7, 9, 11)),
        dependency="after:7",
    )
    assert ids == ["42_0", "42_1", "42_2"]
    assert (fake_sbatch / "argv").read_text().split()[0] == "--dependency=after:7"
    assert (fake_sbatch / "script").read_text() == (jobs / "42_submission.sh").read_text()
    call = load_call(jobs / "42.call")  # what the runner of every task of array 42 loads
    assert (call.function, call.args, call.tasks) == (divmod, (100,), {0: 7, 1: 9, 2: 11})
    assert sorted(p.name for p in jobs.iterdir()) == ["42.call", "42_submission.sh"]  # one call, not one per task


def test_a_single_job_has_no_dependency_flag_and_its_own_call(tmp_path, fake_sbatch):
    ids = submit_script(tmp_path, "#!/bin/bash\nexec true\n", JobCall(max, (3, 4)))
    assert ids == ["42"]
    (script,) = (fake_sbatch / "argv").read_text().split()  # nothing but the script: no --dependency
    assert Path(script).parent == tmp_path and (tmp_path / "42_submission.sh").is_file()
    assert load_call(tmp_path / "42.call") == JobCall(max, (3, 4))


def test_a_refused_submission_says_why_and_leaves_nothing_behind(tmp_path, fake_sbatch, monkeypatch):
    monkeypatch.setenv("FAKE_REFUSE", "Batch job submission failed: Invalid account")
    with pytest.raises(SlurmError) as refused:
        submit_script(tmp_path / "jobs", "#!/bin/bash\n", JobCall(max, (1, 2)), dependency="afterany:5")
    assert str(refused.value) == (
        "sbatch --dependency=afterany:5 <script>: sbatch: error: Batch job submission failed: Invalid account"
    )
    assert list((tmp_path / "jobs").iterdir()) == []
    monkeypatch.setenv("FAKE_REFUSE", "")
    (fake_sbatch / "argv").unlink()
    with pytest.raises(TypeError):  # a call that cannot be pickled: nothing queued, nothing left
        submit_script(tmp_path / "jobs", "#!/bin/bash\n", JobCall(max, (threading.Lock(),)))
    assert list((tmp_path / "jobs").iterdir()) == [] and not (fake_sbatch / "argv").exists()


def test_log_names_are_those_submitit_gave_them():
    out, err = job_log_paths(Path("/r/jobs"), array=True)
    assert (out, err) == ("/r/jobs/%A_%a_0_log.out", "/r/jobs/%A_%a_0_log.err")
    assert job_log_paths(Path("/r/jobs"), array=False)[0] == "/r/jobs/%j_0_log.out"
    assert job_logs(Path("/r/jobs"), "5_3")[0] == Path(
        "/r/jobs/5_3_0_log.out"
    )  # a run folder made before reads the same


def test_sbatch_answers_are_read_in_both_forms():
    assert parse_submitted("Submitted batch job 1234\n") == "1234"
    assert parse_submitted("1234;cluster2\n") == "1234"
    assert parse_submitted("sbatch: error: nope") is None


def test_sacct_lines_fold_steps_and_expand_pending_ranges():
    text = (
        "JobID|State|NodeList\n7|COMPLETED|n1\n7.batch|COMPLETED|n1\n8_[0-2,5%2]|PENDING|None assigned\n"
        "8_3|RUNNING|n2\n9|CANCELLED by 0|n1\n"
    )
    assert parse_sacct(text) == {
        "7": "COMPLETED",
        "8_0": "PENDING",
        "8_1": "PENDING",
        "8_2": "PENDING",
        "8_5": "PENDING",
        "8_3": "RUNNING",
        "9": "CANCELLED",
    }
    assert parse_sacct("JobID|State|NodeList\n") == {}
    assert expand_queued_id("8_[4]") == ["8_4"] and expand_queued_id("8_[x]") == ["8_[x]"]
