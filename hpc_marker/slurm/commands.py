"""Slurm commands as argv lists (never a shell): sbatch, sinfo, sacct, squeue, scancel; read-only queries retried.

What they print is parsed by the pure functions of `parse.py`. What a job runs and where its call is
pickled is `hpc_marker.executors.slurm`'s business; here a script file is only handed to `sbatch`.
"""

from __future__ import annotations

import getpass
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from hpc_marker.slurm.arrays import ArrayLimits
from hpc_marker.slurm.parse import (
    CLOCK_FIELDS,
    SQUEUE_FORMAT,
    JobClock,
    Preemption,
    QueuedJob,
    base_ids,
    fill_from_queue,
    limits_enforced,
    parse_config,
    parse_preemption,
    parse_sacct,
    parse_sacct_clocks,
    parse_squeue,
    parse_submitted,
    parse_user_limits,
)
from hpc_marker.util.errors import Refused

QUERY_TIMEOUT_S = 30
QUERY_RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # a busy slurmctld/slurmdbd often answers on the next try
SUBMIT_TIMEOUT_S = 300  # sbatch retries a busy slurmctld itself; never retried here (it may have queued the job)
ACCOUNTING_TIMEOUT_S = 10  # sacctmgr is asked once: where slurmdbd does not answer, no limit is read
PREEMPTION_TIMEOUT_S = 10  # a task that got its --signal asks once: a preempted one has only GraceTime seconds


class SlurmError(Refused):
    """Slurm refused or could not be asked; the message says which command and why."""


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None


def _run(argv: list[str], timeout_s: float = QUERY_TIMEOUT_S, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, input=stdin)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]}: not found on PATH (is this a Slurm login node?)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{shlex.join(argv)}: no answer within {timeout_s:g}s (slurmctld down?)") from None
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


def array_limits(account: str | None, partition: str | None) -> ArrayLimits:
    """MaxArraySize (scontrol, retried); where the cluster enforces association limits and sacctmgr answers,
    the user's MaxJobs and MaxSubmitJobs for `account` (None: their default) and, with a MaxSubmitJobs,
    how many of their jobs are queued now (array tasks counted)."""
    config = parse_config(_run_with_retries(["scontrol", "show", "config"]))
    size = config.get("MaxArraySize", "")
    limits = ArrayLimits(max_array_size=int(size)) if size.isdigit() else ArrayLimits()
    if not limits_enforced(config.get("AccountingStorageEnforce", "")):
        return limits
    argv = [
        "sacctmgr",
        "--noheader",
        "--parsable2",
        "show",
        "user",
        "withassoc",
        f"where user={getpass.getuser()}",
        "format=User,DefaultAccount,Account,Partition,MaxJobs,MaxSubmitJobs",
    ]
    try:
        max_jobs, max_submit = parse_user_limits(_run(argv, ACCOUNTING_TIMEOUT_S), account, partition)
        queued = 0
        if max_submit is not None:
            queued = len(_run(["squeue", "--me", "--array", "--noheader", "--format=%i"]).split())
    except SlurmError:  # no accounting answer: Slurm itself still refuses what does not fit
        return limits
    return ArrayLimits(limits.max_array_size, max_submit_jobs=max_submit, max_jobs=max_jobs, queued_jobs=queued)


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
    bases = base_ids(job_ids)
    if not bases:
        return {}
    argv = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for jid in bases:
        argv += ["-j", jid]
    states = parse_sacct(_run_with_retries(argv))
    if any(jid not in states for jid in job_ids if jid != "-"):  # slurmdbd learns of new jobs late
        states = fill_from_queue(states, [jid for jid in job_ids if jid != "-"], queue(job_ids))
    return states


def job_accounting(
    job_ids: list[str], earlier: list[str] | None = None
) -> tuple[dict[str, str], dict[str, tuple[JobClock, ...]]]:
    """One sacct query (retried) for the state of each of `job_ids` (squeue's for those sacct does not know yet)
    and the clock of every allocation of them and of `earlier` (jobs whose state nobody asks: a task's jobs that
    a resubmission replaced): `sacct -X -D`, a requeued job once per time it ran."""
    live = [jid for jid in job_ids if jid != "-"]
    bases = base_ids([*live, *(earlier or [])])
    if not bases:
        return {}, {}
    argv = ["sacct", "-X", "-D", "-o", CLOCK_FIELDS, "--parsable2"]
    for jid in bases:
        argv += ["-j", jid]
    text = _run_with_retries(argv)
    clocks = parse_sacct_clocks(text)
    states = parse_sacct(text) | {jid: runs[-1].state for jid, runs in clocks.items()}  # a requeued job's newest
    if any(jid not in states for jid in live):  # slurmdbd learns of new jobs late
        states = fill_from_queue(states, live, queue(live))
    wanted = {*live, *(earlier or [])}
    return states, {jid: runs for jid, runs in clocks.items() if jid in wanted}


def preemption(job_id: str) -> Preemption:
    """Whether Slurm is preempting job `job_id` (this job: SLURM_JOB_ID), from `scontrol -o show job` (one try)."""
    return parse_preemption(_run(["scontrol", "-o", "show", "job", job_id], timeout_s=PREEMPTION_TIMEOUT_S))


def queue(job_ids: list[str]) -> list[QueuedJob]:
    """What squeue says about these jobs (any still queued or running), one entry a squeue line."""
    bases = set(base_ids(job_ids))
    if not bases:
        return []
    # Not `--jobs`: squeue rejects ids that have already left its memory.
    out = _run(["squeue", "--me", "--noheader", f"--format={SQUEUE_FORMAT}"])
    return [job for job in parse_squeue(out) if job.base_id in bases]


def queued_jobs(job_ids: list[str]) -> list[str]:
    """Job ids still in squeue (pending array tasks folded as '123_[0-3]')."""
    return [job.job_id for job in queue(job_ids)]


def unreachable(message: str) -> bool:
    """Whether a failed command's message says Slurm could not be asked (not that it refused)."""
    return any(
        words in message
        for words in (
            "Unable to contact",
            "no answer within",
            "not found on PATH",
            "Socket timed out",
            "Connection refused",
        )
    )


def test_only(script: str) -> None:
    """`sbatch --test-only` of a script (on stdin): Slurm checks it against the partitions and nodes and
    queues nothing. SlurmError with Slurm's reason ('Requested node configuration is not available')."""
    try:
        _run(["sbatch", "--test-only"], stdin=script)
    except SlurmError as exc:
        raise SlurmError(str(exc).removeprefix("sbatch --test-only: ").removeprefix("sbatch: error: ")) from None


def sbatch_argv(script: Path, dependency: str | None = None) -> list[str]:
    """The `sbatch` command that queues `script` (after `dependency`, a Slurm dependency expression)."""
    return ["sbatch", *([f"--dependency={dependency}"] if dependency else []), str(script)]


def submit(script: Path, dependency: str | None = None) -> str:
    """Queue the script file; the job id Slurm gave it (an array's own id for an array script)."""
    argv = sbatch_argv(script, dependency)
    try:
        out = _run(argv, timeout_s=SUBMIT_TIMEOUT_S)
    except SlurmError as exc:  # the script file is a temporary name: say <script>
        raise SlurmError(str(exc).replace(shlex.quote(str(script)), "<script>", 1)) from None
    job_id = parse_submitted(out)
    if job_id is None:
        raise SlurmError(f"{shlex.join(argv[:-1])} <script>: no job id in its answer {out.strip()!r}")
    return job_id


def update_dependency(job_id: str, dependency: str) -> None:
    """Make a pending job wait for `dependency` instead (`scontrol update`); SlurmError once it has started."""
    _run(["scontrol", "update", f"JobId={job_id}", f"Dependency={dependency}"])


def cancel_jobs(job_ids: list[str]) -> None:
    bases = base_ids(job_ids)
    if bases:
        _run(["scancel", *bases])
