"""Rounds: a Slurm run that continues itself when a round of its arrays ended with work left.

A round is one submission of conversion arrays and their collector (`submit`, `resume`, `retry`, or the
collector continuing the run); run.json keeps them (runstate/record.Round). When a round's collector has
collected, `next_round` decides (pure) whether the run submits its next round itself: only when every task
that stopped early stopped for a cause another round cures (time limit, preemption, node failure, a job
cancelled by the system, a task killed without a word), the round committed at least one item, the run has
rounds left (--max-rounds) and was not cancelled. The collector job (manage/collect.collect_job) then runs
`hpcmarker continue RUN` (submission/resume.continue_run: the same resubmission as `resume`), whose failure
(a cluster that forbids sbatch on compute nodes) ends the run incomplete with a one-line reason and the
`resume` command. Local runs have no time limit: they have one round and never continue.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from hpc_marker.manage.verdict import INCOMPLETE, LEFT, NODE_FAILURE, PREEMPTED
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import Round, RunRecord
from hpc_marker.runstate.stops import CANCELLED, ERROR, TIME_LIMIT, TaskStop
from hpc_marker.util.text import plural

# Causes that another round cures by itself. ERROR only where the task never said it (killed without a word):
# an error the task reported itself comes back the same way.
CURABLE = frozenset({TIME_LIMIT, PREEMPTED, NODE_FAILURE, CANCELLED, LEFT})
CONTINUE = "continue"  # Round.by of a round the collector submitted


@dataclass(frozen=True)
class Decision:
    go: bool  # submit the next round
    why: str = ""  # one line: why the run does not continue ("" where there is nothing to say)


def round_count(record: RunRecord) -> int:
    """How many rounds the run submitted (a run from before rounds were recorded: one)."""
    return max(1, len(record.rounds))


def task_rounds(record: RunRecord) -> dict[int, int]:
    """Task index -> the last round that ran it (tasks of no recorded round: round 1). Pure."""
    found: dict[int, int] = {}
    for one in record.rounds:
        found.update(dict.fromkeys((*one.tasks, *one.grown), one.number))
    return found


def grown_tasks(record: RunRecord) -> list[int]:
    """The tasks `hpcmarker grow` added to the run, in every round. Pure."""
    return [task for one in record.rounds for task in one.grown]


def incurable(causes: Mapping[str, list[int]], stops: Mapping[int, TaskStop]) -> str | None:
    """The first cause another round would not cure, or None. Pure."""
    for cause, tasks in causes.items():
        if cause == ERROR and all(stops.get(t) is None or stops[t].cause != ERROR for t in tasks):
            continue  # killed without a word: its record still says running
        if cause not in CURABLE:
            return cause
    return None


def next_round(
    record: RunRecord,
    state: str,
    causes: Mapping[str, list[int]],
    stops: Mapping[int, TaskStop],
    done: int,
    waits: bool = False,
    cancelled: bool = False,
) -> Decision:
    """Whether the run submits its next round, from its collected state, the causes of its tasks' stops (cause
    -> tasks), their stop records and how many items have a final status now. `waits`: the run's executor
    waits for its jobs (local: no time limit, one round); `cancelled`: the run folder has `cancel`'s mark. Pure."""
    rounds = round_count(record)
    before = (record.rounds[-2].done_items or 0) if len(record.rounds) > 1 else 0
    if waits or state != INCOMPLETE or record.max_rounds <= 1:
        return Decision(False)
    if record.cancelled is not None or cancelled:
        return Decision(False, "not continued: the run was cancelled")
    cause = incurable(causes, stops)
    if cause is not None:
        return Decision(False, f"not continued: another round cannot cure {cause.replace('_', ' ')}")
    if done <= before:
        return Decision(False, f"not continued: round {rounds} committed no item")
    if rounds >= record.max_rounds:
        return Decision(False, f"not continued: --max-rounds {record.max_rounds} reached")
    return Decision(True)


def new_round(record: RunRecord, tasks: list[int], by: str) -> Round:
    """The round that a submission of `tasks` starts (the first one's tasks: every task)."""
    return Round(round_count(record) + 1 if record.rounds else 1, time.time(), tuple(tasks), by)


def close_round(paths: RunPaths, state: str, causes: Mapping[str, list[int]], done: int, note: str) -> list[Round]:
    """Write why the run's latest round ended (`finished` or its causes), its items done and the note on the
    next round into run.json (a run from before rounds: its one round made up); returns the rounds."""
    record = paths.load_record()
    rounds = list(record.rounds) or [Round(1, record.submitted or record.created, tuple(range(record.tasks)))]
    ended = "finished" if state != INCOMPLETE else ", ".join(c.replace("_", " ") for c in causes) or state
    rounds[-1] = replace(rounds[-1], done_items=done, ended=ended, note=note)
    record.rounds = rounds
    paths.save_record(record)
    return rounds


def round_lines(record: RunRecord) -> list[str]:
    """From round 2 on (or once the run grew), one line per round: who submitted it, its tasks (and those `grow`
    added), what ended it. Pure."""
    if len(record.rounds) < 2 and not grown_tasks(record):
        return []
    return [
        f"round {r.number} ({r.by}, {plural(len(r.tasks), 'task')}"
        + (f" + {len(r.grown)} grown" if r.grown else "")
        + f"): {r.ended or 'running'}"
        + (f"; {r.note}" if r.note else "")
        for r in record.rounds
    ]


def last_note(record: RunRecord, state: str) -> list[str]:
    """Why a run that is not finished did not continue after its last round (its note), as a reason line. Pure."""
    return [one.note for one in record.rounds[-1:] if one.note and state != "finished"]
