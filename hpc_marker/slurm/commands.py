"""Slurm: submitting rendered scripts through submitit, and asking Slurm about a run's jobs.

`TemplateSlurmExecutor` is submitit's SlurmExecutor with two changes: the script text is the
one hpcmarker rendered from its templates (so `--dry-run` prints exactly what is sent), and
dependencies travel on the `sbatch` command line, not in the script. Every Slurm command is
an argv list; nothing goes through a shell.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core import core, utils
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

QUERY_TIMEOUT_S = 30
QUERY_RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # a busy slurmctld/slurmdbd often answers on the next try


class SlurmError(Exception):
    """Slurm refused or could not be asked; the message says which command and why."""


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None


def submitit_command(python: str, folder: Path) -> list[str]:
    """The command a job runs: submitit's runner on the pickled call in `folder`."""
    return [python, "-u", "-m", "submitit.core._submit", str(folder)]


class TemplateSlurmExecutor(submitit.SlurmExecutor):
    """Submits `script` (already rendered) as is; with `array_indices` as an array of those tasks."""

    def __init__(self, folder: Path, script: str, *, array_indices: list[int] | None = None, timeout_min: int = 60,
                 dependency: str | None = None) -> None:
        super().__init__(folder=folder)
        self.script = script
        self.array_indices = array_indices or []
        self.timeout_min = timeout_min
        self.dependency = dependency

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        return self.script

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        argv = ["sbatch"]
        if self.dependency:
            argv.append(f"--dependency={self.dependency}")
        return [*argv, str(submission_file_path)]

    def _submit_command(self, command: str) -> core.Job[Any]:
        try:
            return super()._submit_command(command)
        except utils.FailedJobError as exc:
            argv = self._make_submission_command(Path("<script>"))
            detail = str(exc).strip().splitlines()
            raise SlurmError(f"{shlex.join(argv)} failed: {detail[-1] if detail else 'no message'}") from None

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list[core.Job[Any]]:
        if not self.array_indices:
            return core.PicklingExecutor._internal_process_submissions(self, delayed_submissions)
        if len(delayed_submissions) != len(self.array_indices):
            raise ValueError(f"script declares {len(self.array_indices)} array tasks, got {len(delayed_submissions)}")
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickles = []
        for delayed in delayed_submissions:
            path = folder / f"{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(self.timeout_min, self.max_num_timeout)
            delayed.dump(path)
            pickles.append(path)
        first = self._submit_command(self._submitit_command_str)
        jobs: list[core.Job[Any]] = [
            SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{index}", tasks=[0])
            for index in self.array_indices
        ]
        for job, path in zip(jobs, pickles):
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs


def array_spec(indices: list[int]) -> str:
    """Slurm's --array value for these task indices: '0-3' when contiguous, else '1,4,7'."""
    if indices == list(range(indices[0], indices[0] + len(indices))):
        return f"{indices[0]}-{indices[-1]}"
    return ",".join(str(i) for i in indices)


def job_log_paths(folder: Path, array: bool) -> tuple[str, str]:
    """stdout/stderr patterns as submitit expects them for a job (or array task) in `folder`."""
    paths = utils.JobPaths(folder=folder)
    out, err = str(paths.stdout), str(paths.stderr)
    if array:
        out, err = out.replace("%j", "%A_%a"), err.replace("%j", "%A_%a")
    return out.replace("%t", "0"), err.replace("%t", "0")


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]}: not found on PATH (is this a Slurm login node?)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{shlex.join(argv)}: no answer within {QUERY_TIMEOUT_S}s (slurmctld down?)") from None
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[-1]
        raise SlurmError(f"{shlex.join(argv)}: {message}")
    return done.stdout


def partitions() -> dict[str, str]:
    """Partition name -> its GRES list, as sinfo reports them ('(null)' when none)."""
    out = _run(["sinfo", "--noheader", "--format=%P|%G"])
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, _, gres = line.partition("|")
        name = name.strip().rstrip("*")
        if name:
            found[name] = ",".join(x for x in (found.get(name, ""), gres.strip()) if x)
    return found


def default_partition() -> str | None:
    out = _run(["sinfo", "--noheader", "--format=%P"])
    for line in out.splitlines():
        if line.strip().endswith("*"):
            return line.strip().rstrip("*")
    return None


def _run_with_retries(argv: list[str], delays: tuple[float, ...] = QUERY_RETRY_DELAYS_S) -> str:
    """Run a read-only query, retrying with backoff before calling the scheduler unreachable."""
    for delay in delays:
        try:
            return _run(argv)
        except SlurmError:
            time.sleep(delay)
    try:
        return _run(argv)
    except SlurmError as exc:
        raise SlurmError(f"scheduler unreachable after {len(delays) + 1} tries: {exc}") from None


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job (and array task, as '<id>_<i>') from sacct, in one query (retried)."""
    base_ids = sorted({jid.split("_")[0] for jid in job_ids if jid != "-"})
    if not base_ids:
        return {}
    argv = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for jid in base_ids:
        argv += ["-j", jid]
    info = SlurmInfoWatcher().read_info(_run_with_retries(argv))
    states = {jid: stats.get("State", "UNKNOWN").split(" ")[0] for jid, stats in info.items()}
    if any(jid not in states for jid in job_ids if jid != "-"):  # slurmdbd learns of new jobs late
        states = fill_from_queue(states, [jid for jid in job_ids if jid != "-"], queue(job_ids))
    return states


def expand_queued_id(job_id: str) -> list[str]:
    """'123_[0-2,5%2]' -> ['123_0', '123_1', '123_2', '123_5']; any other id -> [id]. Pure."""
    match = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", job_id)
    if not match:
        return [job_id]
    base, ids = match.group(1), []
    for part in match.group(2).split(","):
        low, _, high = part.partition("-")
        ids += [f"{base}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def fill_from_queue(states: dict[str, str], job_ids: list[str], queued: list[QueuedJob]) -> dict[str, str]:
    """sacct's states, plus squeue's for the jobs sacct does not show yet (just submitted). Pure."""
    from_queue = {jid: job.state for job in queued for jid in expand_queued_id(job.job_id)}
    return dict(states) | {jid: from_queue[jid] for jid in job_ids if jid not in states and jid in from_queue}


SQUEUE_FORMAT = "%i|%T|%r|%E"  # job id, state, reason, dependencies
_DEPENDENCY = re.compile(r"(\w+):(\d+(?:_[\d*]+)?)(?:\+\d+)?\((\w+)\)")


@dataclass(frozen=True)
class QueuedJob:
    """One squeue line: a job, an array task ('123_4'), or pending array tasks folded as '123_[0-3]'."""

    job_id: str
    state: str
    reason: str  # why it pends ('Dependency', 'DependencyNeverSatisfied', ...); 'None' when running
    dependency: str = ""  # as squeue's %E prints it, e.g. 'afterok:122(failed)'; '' when none

    @property
    def base_id(self) -> str:
        return self.job_id.split("_")[0]


@dataclass(frozen=True)
class Dependency:
    kind: str  # after, afterany, afterok, afternotok...
    job_id: str  # '122', or '123_*' for a whole array
    state: str  # as squeue words it: unfulfilled, fulfilled, failed


def parse_squeue(text: str) -> list[QueuedJob]:
    """Output of `squeue --noheader --format=SQUEUE_FORMAT` -> one QueuedJob a line. Pure."""
    jobs = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|", 3)]
        if len(fields) < 3 or not fields[0]:
            continue
        dependency = fields[3] if len(fields) == 4 and fields[3] != "(null)" else ""
        jobs.append(QueuedJob(fields[0], fields[1], fields[2], dependency))
    return jobs


def parse_dependency(text: str) -> list[Dependency]:
    """squeue's %E ('afterok:122(failed),afterany:123_*(unfulfilled)', '?' between OR'ed ones). Pure."""
    return [Dependency(*match.groups()) for match in _DEPENDENCY.finditer(text)]


def queue(job_ids: list[str]) -> list[QueuedJob]:
    """What squeue says about these jobs (any still queued or running), one entry a squeue line."""
    base_ids = {jid.split("_")[0] for jid in job_ids}
    if not base_ids:
        return []
    # Not `--jobs`: squeue rejects ids that have already left its memory.
    out = _run(["squeue", "--me", "--noheader", f"--format={SQUEUE_FORMAT}"])
    return [job for job in parse_squeue(out) if job.base_id in base_ids]


def queued_jobs(job_ids: list[str]) -> list[str]:
    """Job ids still in squeue (pending array tasks folded as '123_[0-3]')."""
    return [job.job_id for job in queue(job_ids)]


def cancel_jobs(job_ids: list[str]) -> None:
    base_ids = sorted({jid.split("_")[0] for jid in job_ids})
    if base_ids:
        _run(["scancel", *base_ids])
