"""Verdict: what a run's state means, in one word, one line per cause, the next command and an exit
code. Pure: facts in (job states, the tasks' own stop records, counts, squeue's pending reasons),
words out. `status`, the collector's summary, the report and a local `submit` all say the same.

States: pending, running, collecting (something is still queued or running); finished (every item
has a final status and the run is collected); incomplete (nothing runs any more, but items are
left without a final status, or the run was not collected); wedged (a job of the run pends
forever on a dependency). A cause is taken from the task's own record (runstate/stops.py) and,
for a task killed without a word, from the scheduler's job state (TIMEOUT, OUT_OF_MEMORY,
NODE_FAIL, PREEMPTED, CANCELLED, FAILED); never from a log.

Exit codes of `status` (and of a local `submit`): 0 finished with every item ok, or still going;
3 finished, but some items failed; 4 incomplete or wedged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from hpc_marker.engines.cachepieces import PREFETCH_COMMAND
from hpc_marker.runstate.stops import (
    CANCELLED,
    DONE,
    ENGINE,
    ENGINE_CACHE,
    ERROR,
    INFERENCE,
    LLM_SERVICE,
    LLM_UNFIT,
    PREEMPTED,
    RUNNING,
    STORAGE_FULL,
    TIME_LIMIT,
    TaskStop,
)
from hpc_marker.slurm.parse import index_ranges, parse_memory_spec, parse_time_limit
from hpc_marker.slurm.pending import reason_word, stuck_reason
from hpc_marker.util.commands import command_line
from hpc_marker.util.text import plural

ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING"}
PENDING, RUNNING_STATE, COLLECTING = "pending", "running", "collecting"
FINISHED, INCOMPLETE, WEDGED = "finished", "incomplete", "wedged"
OVER_STATES = (FINISHED, INCOMPLETE, WEDGED)
EXIT_OK, EXIT_FAILED_ITEMS, EXIT_INCOMPLETE = 0, 3, 4
MAX_ATTEMPTS = 3  # an item that failed this many times is poison: reported, not retried (but with --include-poison)
# causes known only from the scheduler (the task could not say): job state -> (cause, what happened)
OUT_OF_MEMORY, NODE_FAILURE, NOT_COLLECTED, STUCK, LEFT, DEPENDENCY = (
    "out_of_memory",
    "node_failure",
    "not_collected",
    "stuck",
    "left",
    "dependency",
)
UNRETRYABLE = "unretryable"  # finished, and no failed item could convert on another try as it is
JOB_STATE_CAUSES = {
    "TIMEOUT": (TIME_LIMIT, "killed at its time limit (job TIMEOUT)"),
    "DEADLINE": (TIME_LIMIT, "killed at its deadline (job DEADLINE)"),
    "OUT_OF_MEMORY": (OUT_OF_MEMORY, "killed: out of memory (job OUT_OF_MEMORY)"),
    "NODE_FAIL": (NODE_FAILURE, "its node failed (job NODE_FAIL)"),
    "BOOT_FAIL": (NODE_FAILURE, "its node did not boot (job BOOT_FAIL)"),
    "PREEMPTED": (PREEMPTED, "preempted by another job (job PREEMPTED)"),
    "CANCELLED": (CANCELLED, "cancelled"),
}
CAUSE_ORDER = (
    ENGINE_CACHE,
    ENGINE,
    INFERENCE,
    LLM_UNFIT,
    LLM_SERVICE,
    STORAGE_FULL,
    OUT_OF_MEMORY,
    TIME_LIMIT,
    NODE_FAILURE,
    PREEMPTED,
    CANCELLED,
    ERROR,
    DEPENDENCY,
    STUCK,
    LEFT,
    NOT_COLLECTED,
)


@dataclass(frozen=True)
class TaskView:
    """What the verdict needs of one task: its job, the job's state, and its share's items left."""

    task: int
    job_id: str
    state: str
    pending: int = 0


@dataclass(frozen=True)
class RunFacts:
    run_id: str
    time_limit: str
    mem: str | None
    cancelled: bool  # the run was cancelled (hpcmarker cancel, Ctrl-C, or its wedged jobs)
    tasks: tuple[TaskView, ...]
    stops: Mapping[int, TaskStop]
    items: int
    pending: int  # items without a final status
    failed: int  # items whose final status is not ok
    collected: bool
    collector: str  # the collector's job state, or "-"
    pending_reasons: Mapping[str, str] = field(default_factory=dict)  # pending job id -> squeue's %r
    other_jobs: Mapping[str, str] = field(default_factory=dict)  # service or collector job id -> its label
    wedged: bool = False  # a job pends forever on its dependencies, and is still queued
    partial: int = 0  # items converted but for lost pages (bisected): not ok either
    # Of the failed items and lost pages (None: not known, so `retry` is offered): how many `retry` would try
    # again and could convert, how many cannot be read as they are (the scan said so, or encrypted: a retry
    # fails them the same way), how many failed MAX_ATTEMPTS times (poison: `retry` leaves them).
    retryable: int | None = None
    known_at_scan: int = 0
    poison: int = 0


@dataclass(frozen=True)
class Reason:
    """One distinct cause: what happened to how many tasks (or jobs), and what to do."""

    cause: str
    what: str
    tasks: tuple[int, ...] = ()
    jobs: tuple[str, ...] = ()  # for causes that are not tasks' (the service, the collector)
    advice: str = ""  # what to do before the command, in words
    verb: str = "resume"  # resume, retry, collect, cancel (then resume); "" for no command
    options: tuple[tuple[str, str], ...] = ()  # options for the command: (flag, value)
    first: str = ""  # a command that must run before it, in this shell (prefetch, then source its env.sh)

    def command(self, run_id: str) -> str:
        return next_command(run_id, [self])

    def line(self, run_id: str) -> str:
        """'2 tasks (0,1): time limit near (USR2) — next: hpcmarker resume r1 --time 00:08:00'."""
        count = len(self.tasks) or len(self.jobs)
        noun = "task" if self.tasks else "job"
        who = (
            f"{plural(count, noun)} ({index_ranges(list(self.tasks))})"
            if self.tasks
            else f"{', '.join(self.jobs)}"
            if self.jobs
            else "the run"
        )
        todo = self.command(run_id)
        fix = (
            f"{self.advice}, then: {todo}"
            if self.advice and todo
            else (self.advice or (f"next: {todo}" if todo else ""))
        )
        return f"{who}: {self.what}" + (f" — {fix}" if fix else "")


@dataclass(frozen=True)
class Verdict:
    state: str
    headline: str  # the state in one line, with counts
    reasons: tuple[Reason, ...]
    next: str | None  # the exact next command, when there is one
    exit_code: int

    def lines(self, run_id: str) -> list[str]:
        return [reason.line(run_id) for reason in self.reasons]


def next_command(run_id: str, reasons: list[Reason]) -> str:
    """The one command that follows from these reasons: retry over resume, their options together."""
    verbs = {r.verb for r in reasons if r.verb}
    if not verbs:
        return ""
    first = "".join(f"{command} && " for command in dict.fromkeys(r.first for r in reasons if r.first))
    return first + _verb_command(run_id, reasons, verbs)


def _verb_command(run_id: str, reasons: list[Reason], verbs: set[str]) -> str:
    options: dict[str, str] = {}
    for reason in reasons:
        for flag, value in reason.options:
            options.setdefault(flag, value)
    flags = [word for flag, value in options.items() for word in (flag, value)]
    if "cancel" in verbs:
        return f"{command_line('cancel', run_id)} && {command_line('resume', run_id, *flags)}"
    verb = "retry" if "retry" in verbs else "resume" if "resume" in verbs else "collect"
    return command_line(verb, run_id, *(flags if verb != "collect" else ()))


def doubled_time(time_limit: str) -> str:
    """Twice a Slurm time limit, as HH:MM:SS (D-HH:MM:SS past a day). Pure."""
    minutes = 2 * (parse_time_limit(time_limit) or 60)
    days, rest = divmod(minutes, 24 * 60)
    clock = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{clock}" if days else clock


def doubled_memory(mem: str | None) -> str:
    """Twice sbatch's --mem ('16G' -> '32G'; default units are megabytes); 32G when the run set none. Pure."""
    size = parse_memory_spec(mem or "")
    return f"{2 * size[0]}{size[1]}" if size else "32G"


def task_cause(stop: TaskStop | None, task: TaskView) -> tuple[str, str] | None:
    """(cause, what happened) for a task that stopped without finishing normally; None when it is
    still going or stopped because its work was done. The task's own record first (the record of
    its current job: a resubmitted task's earlier record does not count). Pure."""
    job_state = task.state
    if stop is not None and task.job_id not in ("", "-") and stop.job_id and stop.job_id != task.job_id:
        stop = None
    if stop is not None and stop.cause not in (RUNNING, DONE):
        return stop.cause, stop.detail or stop.cause.replace("_", " ")
    if (stop is not None and stop.cause == DONE) or job_state in ACTIVE_STATES:
        return None
    if job_state in JOB_STATE_CAUSES:
        cause, what = JOB_STATE_CAUSES[job_state]
        return cause, what if stop is not None or cause != CANCELLED else "cancelled before it started"
    if stop is None and job_state in ("COMPLETED", "UNKNOWN", "-"):
        return None  # never started under this job (a resumed run's finished task), or unknown to the scheduler
    return ERROR, f"ended without saying why (job {job_state}; killed, or a crash before its record)"


def _fix(cause: str, facts: RunFacts, tasks: tuple[int, ...]) -> dict:
    """advice, verb and options for a cause."""
    first = tasks[0] if tasks else 0
    logs = command_line("logs", facts.run_id, "--task", first)
    return {
        TIME_LIMIT: {"options": (("--time", doubled_time(facts.time_limit)),)},
        OUT_OF_MEMORY: {"options": (("--mem", doubled_memory(facts.mem)),)},
        STORAGE_FULL: {"advice": "free space", "verb": "retry"},
        ENGINE: {"advice": f"make the engine work in the jobs' environment (see `{logs}`, `hpcmarker doctor`)"},
        ENGINE_CACHE: {"first": PREFETCH_COMMAND},  # on the login node (internet), then resume
        INFERENCE: {"advice": f"install vllm where the jobs run, or set the profile's inference_server (see `{logs}`)"},
        LLM_SERVICE: {"advice": f"see `{command_line('logs', facts.run_id, '--service')}`"},
        LLM_UNFIT: {"advice": "change what it names, then submit again (resume keeps the run's model)", "verb": ""},
        ERROR: {"advice": f"see `{logs}`"},
    }.get(cause, {})


def task_reasons(facts: RunFacts) -> list[Reason]:
    """One Reason per distinct cause of the tasks that stopped early, most important first. Pure."""
    by_cause: dict[str, list[tuple[int, str]]] = {}
    for task in facts.tasks:
        found = task_cause(facts.stops.get(task.task), task)
        if found is not None:
            by_cause.setdefault(found[0], []).append((task.task, found[1]))
    reasons = []
    for cause in sorted(by_cause, key=lambda c: CAUSE_ORDER.index(c) if c in CAUSE_ORDER else len(CAUSE_ORDER)):
        tasks = tuple(sorted(t for t, _ in by_cause[cause]))
        what = Counter(w for _, w in by_cause[cause]).most_common(1)[0][0]
        reasons.append(Reason(cause, what, tasks=tasks, **_fix(cause, facts, tasks)))
    return reasons


def pending_reasons(facts: RunFacts) -> list[Reason]:
    """One Reason per squeue reason that will not clear by waiting (tasks or the run's other jobs). Pure."""
    task_of = {t.job_id: t.task for t in facts.tasks}
    grouped: dict[str, list[str]] = {}
    for job_id, reason in sorted(facts.pending_reasons.items()):
        if stuck_reason(reason):
            grouped.setdefault(reason_word(reason), []).append(job_id)
    reasons = []
    for word, ids in grouped.items():
        tasks = tuple(sorted(task_of[j] for j in ids if j in task_of))
        others = tuple(facts.other_jobs.get(j, j) for j in ids if j not in task_of)
        reasons.append(
            Reason(
                STUCK,
                f"pending with {word}: {stuck_reason(word)}",
                tasks=tasks,
                jobs=others,
                advice="ask for less (--cpus-per-task, --mem, --time) or another --partition",
                verb="cancel",
            )
        )
    return reasons


def unretryable(facts: RunFacts) -> tuple[Reason, ...]:
    """Why `retry` is not offered for a finished run's failed items, when none could convert on another
    try as it is: known unreadable from the scan, or poison. Pure."""
    if facts.retryable != 0 or not (facts.failed or facts.partial):
        return ()
    parts = (
        [
            f"{facts.known_at_scan} cannot be read as they are (not a PDF, empty, encrypted: their "
            "manifest lines say which)"
        ]
        if facts.known_at_scan
        else []
    )
    if facts.poison:
        parts.append(
            f"{facts.poison} failed {MAX_ATTEMPTS} times and are not retried: `hpcmarker retry {facts.run_id} "
            "--include-poison` tries them once more (with other settings, e.g. --item-timeout or --mem)"
        )
    count = facts.failed + facts.partial
    return (Reason(UNRETRYABLE, f"{count} failed items cannot be converted by `retry`: " + "; ".join(parts), verb=""),)


def run_state(facts: RunFacts) -> str:
    """One word for the whole run. Pure."""
    states = [t.state for t in facts.tasks]
    if facts.wedged:
        return WEDGED
    if any(s == "RUNNING" for s in states):
        return RUNNING_STATE
    if any(s in ACTIVE_STATES for s in states):
        return PENDING if all(s in {"PENDING", "UNKNOWN"} for s in states) else RUNNING_STATE
    if facts.collector in ACTIVE_STATES:
        return COLLECTING
    return FINISHED if facts.collected and facts.pending == 0 else INCOMPLETE


def verdict(facts: RunFacts) -> Verdict:
    """State, headline, reasons, next command and exit code of a run. Pure."""
    state = run_state(facts)
    reasons = task_reasons(facts) + pending_reasons(facts)
    if state == FINISHED:
        failed = f", {facts.failed} failed" if facts.failed else ""
        partial = f", {facts.partial} partial (pages lost)" if facts.partial else ""
        stuck = unretryable(facts)
        nxt = command_line("retry", facts.run_id) if (facts.failed or facts.partial) and not stuck else None
        ok = facts.items - facts.failed - facts.partial
        return Verdict(
            state,
            f"finished: {ok} ok{partial}{failed} of {plural(facts.items, 'item')}",
            stuck,
            nxt,
            EXIT_FAILED_ITEMS if facts.failed or facts.partial else EXIT_OK,
        )
    if state == WEDGED:
        reasons.append(
            Reason(
                DEPENDENCY,
                "pending forever with DependencyNeverSatisfied: a job the run waits on "
                "ended in a way that can never satisfy it",
                verb="cancel",
            )
        )
    if state in (INCOMPLETE, WEDGED):
        if facts.cancelled and not any(r.cause == CANCELLED for r in reasons) and facts.pending:
            reasons.append(Reason(CANCELLED, "the run was cancelled"))
        if facts.pending and not reasons:
            reasons.append(
                Reason(
                    LEFT,
                    f"{plural(facts.pending, 'item')} {'was' if facts.pending == 1 else 'were'} "
                    "left unconverted by tasks that ended",
                )
            )
        if not facts.pending and not facts.collected:
            collector = f" (job {facts.collector})" if facts.collector != "-" else ""
            reasons.append(
                Reason(NOT_COLLECTED, f"every item is done, but the run was not collected{collector}", verb="collect")
            )
    reasons = sorted(reasons, key=lambda r: CAUSE_ORDER.index(r.cause) if r.cause in CAUSE_ORDER else len(CAUSE_ORDER))
    causes = ", ".join(dict.fromkeys(r.cause.replace("_", " ") for r in reasons))
    if state in (INCOMPLETE, WEDGED):
        left = f"{facts.pending} of {plural(facts.items, 'item')} not converted" if facts.pending else "not collected"
        return Verdict(
            state,
            f"{state}: {left}" + (f" ({causes})" if causes else ""),
            tuple(reasons),
            next_command(facts.run_id, reasons) or None,
            EXIT_INCOMPLETE,
        )
    stuck = [r for r in reasons if r.cause == STUCK]  # still queued, but waiting will not help: say what will
    return Verdict(
        state,
        state + (f" ({causes})" if causes else ""),
        tuple(reasons),
        next_command(facts.run_id, stuck) or None,
        EXIT_OK,
    )
