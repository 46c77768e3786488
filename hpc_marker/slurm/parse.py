"""Pure parsers of what Slurm prints and takes: job ids, array specs, time limits, squeue lines, dependencies.

Nothing here runs a command; `commands.py` does, and hands the text to these functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

SQUEUE_FORMAT = "%i|%T|%r|%E"  # job id, state, reason, dependencies
_DEPENDENCY = re.compile(r"(\w+):(\d+(?:_[\d*]+)?)(?:\+\d+)?\((\w+)\)")
_ARRAY_RANGE = re.compile(r"(\d+)_\[([\d,-]+)(?:%\d+)?\]")  # '123_[0-2,5%2]', as sacct and squeue fold them
_SUBMITTED = re.compile(r"^(?:Submitted batch job )?(\d+)(?:;\S*)?(?:\s|$)", re.MULTILINE)
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
_MEMORY = re.compile(r"(\d+)(?:([KMGT])B?)?")


def base_id(job_id: str) -> str:
    """'123_4' -> '123' (the array's job id); '123' -> '123'."""
    return job_id.split("_", 1)[0]


def base_ids(job_ids: list[str]) -> list[str]:
    """The distinct base ids of these jobs, sorted ('-', a job never submitted, is left out)."""
    return sorted({base_id(jid) for jid in job_ids if jid and jid != "-"})


def expand_queued_id(job_id: str) -> list[str]:
    """'123_[0-2,5%2]' -> ['123_0', '123_1', '123_2', '123_5']; any other id -> [id]."""
    folded = _ARRAY_RANGE.fullmatch(job_id)
    if folded is None:
        return [job_id]
    ids = []
    for span in folded.group(2).split(","):
        low, _, high = span.partition("-")
        ids += [f"{folded.group(1)}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def parse_submitted(text: str) -> str | None:
    """The job id in what `sbatch` answers ('Submitted batch job 123', or '123[;cluster]' with --parsable)."""
    found = _SUBMITTED.search(text.strip())
    return found.group(1) if found else None


def parse_sacct(text: str) -> dict[str, str]:
    """`sacct -o JobID,State,... --parsable2` -> {job id: state}: array tasks as '<id>_<i>' (a pending range
    expanded), job steps ('123.batch') left out, 'CANCELLED by 0' as 'CANCELLED'; with -D (a requeued job once
    per time it ran, oldest first) its last line's."""
    lines = text.splitlines()
    if len(lines) < 2:
        return {}
    names = lines[0].split("|")
    states: dict[str, str] = {}
    for line in lines[1:]:
        row = {name: value.strip() for name, value in zip(names, line.split("|"), strict=False)}
        job_id = row.get("JobID", "")
        if not job_id or "." in job_id:
            continue
        for jid in expand_queued_id(job_id):
            states[jid] = row.get("State", "UNKNOWN").split(" ")[0]
    return states


def array_spec(indices: list[int], throttle: int | None = None) -> str:
    """Slurm's --array value for these task indices: '0-3' when contiguous, else '1,4,7';
    with `throttle` K, '%K' at most K running at once."""
    if indices == list(range(indices[0], indices[0] + len(indices))):
        spec = f"{indices[0]}-{indices[-1]}"
    else:
        spec = ",".join(str(i) for i in indices)
    return f"{spec}%{throttle}" if throttle else spec


def parse_time_limit(text: str) -> int | None:
    """Slurm time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) to whole minutes (at least 1);
    None when `text` is not one of them."""
    match = _TIME.fullmatch(text.strip())
    if not match:
        return None
    days, a, b, c = (int(x) if x else None for x in match.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # M:S
        seconds = a * 60 + b
    else:  # M
        seconds = a * 60
    return max(1, -(-seconds // 60))


def parse_memory_spec(text: str) -> tuple[int, str] | None:
    """sbatch --mem's size (`32G`, `500M`, `2048` in megabytes, `16GB`, `0`: all of a node's memory) as
    (number, unit); None when sbatch would refuse it (`lots`, `1.5G`)."""
    match = _MEMORY.fullmatch(text.strip().upper())
    return (int(match.group(1)), match.group(2) or "M") if match else None


@dataclass(frozen=True)
class QueuedJob:
    """One squeue line: a job, an array task ('123_4'), or pending array tasks folded as '123_[0-3]'."""

    job_id: str
    state: str
    reason: str  # why it pends ('Dependency', 'DependencyNeverSatisfied', ...); 'None' when running
    dependency: str = ""  # as squeue's %E prints it, e.g. 'afterok:122(failed)'; '' when none

    @property
    def base_id(self) -> str:
        return base_id(self.job_id)


@dataclass(frozen=True)
class Dependency:
    kind: str  # after, afterany, afterok, afternotok...
    job_id: str  # '122', or '123_*' for a whole array
    state: str  # as squeue words it: unfulfilled, fulfilled, failed


def parse_squeue(text: str) -> list[QueuedJob]:
    """Output of `squeue --noheader --format=SQUEUE_FORMAT` -> one QueuedJob a line."""
    jobs = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|", 3)]
        if len(fields) < 3 or not fields[0]:
            continue
        dependency = fields[3] if len(fields) == 4 and fields[3] != "(null)" else ""
        jobs.append(QueuedJob(fields[0], fields[1], fields[2], dependency))
    return jobs


def parse_dependency(text: str) -> list[Dependency]:
    """squeue's %E ('afterok:122(failed),afterany:123_*(unfulfilled)', '?' between OR'ed ones)."""
    return [Dependency(*match.groups()) for match in _DEPENDENCY.finditer(text)]


def fill_from_queue(states: dict[str, str], job_ids: list[str], queued: list[QueuedJob]) -> dict[str, str]:
    """sacct's states, plus squeue's for the jobs sacct does not show yet (just submitted)."""
    from_queue = {jid: job.state for job in queued for jid in expand_queued_id(job.job_id)}
    return dict(states) | {jid: from_queue[jid] for jid in job_ids if jid not in states and jid in from_queue}


def parse_config(text: str) -> dict[str, str]:
    """`scontrol show config` ('MaxArraySize            = 1001') -> {'MaxArraySize': '1001', ...}."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            found[key.strip()] = value.strip()
    return found


def limits_enforced(enforce: str) -> bool:
    """Whether AccountingStorageEnforce ('associations,limits,qos', 'none') applies association limits
    ('safe' implies 'limits')."""
    return bool({word.strip().lower() for word in enforce.split(",")} & {"limits", "safe"})


def _limit(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def parse_user_limits(text: str, account: str | None, partition: str | None) -> tuple[int | None, int | None]:
    """(MaxJobs, MaxSubmitJobs) of the association a job of `account` (None: the user's default account) on
    `partition` runs under, from `sacctmgr --noheader --parsable2 show user withassoc
    format=User,DefaultAccount,Account,Partition,MaxJobs,MaxSubmitJobs`; None where no limit is set."""
    rows = [[field.strip() for field in line.split("|")] for line in text.splitlines() if line.count("|") >= 5]
    if not rows:
        return None, None
    wanted = account or rows[0][1]
    mine = [row for row in rows if row[2] == wanted]
    best = [row for row in mine if partition and row[3] == partition] or [row for row in mine if not row[3]] or mine
    if not best:
        return None, None
    return _limit(best[0][4]), _limit(best[0][5])


def index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> '0-3,7,9,10': runs of three or more folded, for people to read."""
    parts: list[str] = []
    ordered = sorted(set(indices))
    start = 0
    while start < len(ordered):
        stop = start
        while stop + 1 < len(ordered) and ordered[stop + 1] == ordered[stop] + 1:
            stop += 1
        if stop - start >= 2:
            parts.append(f"{ordered[start]}-{ordered[stop]}")
        else:
            parts += [str(i) for i in ordered[start : stop + 1]]
        start = stop + 1
    return ",".join(parts)


def fold_job_ids(job_ids: list[str]) -> list[str]:
    """['298_0', ..., '298_1000', '299_0', '300'] -> ['298_[0-1000]', '299_0', '300'], in first-seen order:
    a run's jobs in one short line, however many array tasks it has."""
    tasks: dict[str, list[int]] = {}
    for job_id in job_ids:
        base, _, index = job_id.partition("_")
        tasks.setdefault(base if index.isdigit() else job_id, []).extend([int(index)] if index.isdigit() else [])
    return [
        f"{base}_[{index_ranges(indices)}]" if len(indices) > 1 else (f"{base}_{indices[0]}" if indices else base)
        for base, indices in tasks.items()
    ]


CLOCK_FIELDS = "JobID,Submit,Start,End,ElapsedRaw,AllocTRES,State"  # sacct -X: one line per job or array task
_GPU_TRES = re.compile(r"gres/gpu:[^=,]+=(\d+)")  # typed: gres/gpu:a100=2


@dataclass(frozen=True)
class JobClock:
    """A job's clock as Slurm accounts it (sacct): epoch seconds; `end` None while it runs."""

    job_id: str
    submit: float | None
    start: float | None
    end: float | None
    elapsed: int  # ElapsedRaw: seconds it held its allocation (so far)
    gpus: int  # AllocTRES gres/gpu (0: none)
    state: str

    @property
    def finished(self) -> bool:
        return self.end is not None and self.state not in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED")


def _epoch(text: str) -> float | None:
    """sacct's local time ('2026-12-06T08:43:36') in epoch seconds; None for Unknown, None or empty."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def allocated_gpus(tres: str) -> int:
    """The GPUs of an AllocTRES ('billing=1,cpu=1,gres/gpu=1,node=1'): the untyped count, else the typed ones."""
    untyped = re.search(r"gres/gpu=(\d+)", tres)
    return int(untyped.group(1)) if untyped else sum(int(n) for n in _GPU_TRES.findall(tres))


def parse_sacct_clocks(text: str) -> dict[str, tuple[JobClock, ...]]:
    """`sacct -X -D -o CLOCK_FIELDS --parsable2` -> {job id: each of its allocations' JobClock, oldest first}
    (a requeued job once per time it ran); pending ranges and job steps left out."""
    lines = text.splitlines()
    if len(lines) < 2:
        return {}
    names = lines[0].split("|")
    clocks: dict[str, list[JobClock]] = {}
    for line in lines[1:]:
        row = {name: value.strip() for name, value in zip(names, line.split("|"), strict=False)}
        job_id = row.get("JobID", "")
        if not job_id or "." in job_id or "[" in job_id:
            continue
        elapsed = row.get("ElapsedRaw", "")
        clocks.setdefault(job_id, []).append(
            JobClock(
                job_id,
                _epoch(row.get("Submit", "")),
                _epoch(row.get("Start", "")),
                _epoch(row.get("End", "")),
                int(elapsed) if elapsed.isdigit() else 0,
                allocated_gpus(row.get("AllocTRES", "")),
                row.get("State", "UNKNOWN").split(" ")[0],
            )
        )
    return {jid: tuple(sorted(runs, key=lambda c: c.submit or 0.0)) for jid, runs in clocks.items()}


_FIELD = re.compile(r"(?:^|\s)(\w+)=(\S*)")


@dataclass(frozen=True)
class Preemption:
    """What `scontrol -o show job` says of a running job that got its --signal: whether Slurm is preempting it."""

    preempted_at: float | None  # PreemptTime: when Slurm began to preempt it (None: it is not being preempted)
    ends_at: float | None  # EndTime: once preempted, PreemptTime + the partition's GraceTime
    requeue: bool  # Requeue=1 (sbatch --requeue): with PreemptMode=REQUEUE, Slurm queues it again after the kill


def parse_preemption(text: str) -> Preemption:
    """`scontrol -o show job ID` (one line of Key=Value) -> Preemption. Pure."""
    fields = dict(_FIELD.findall(text))
    return Preemption(
        _epoch(fields.get("PreemptTime", "")), _epoch(fields.get("EndTime", "")), fields.get("Requeue") == "1"
    )
