"""The Slurm executor: our rendered sbatch scripts submitted with `sbatch`; the run's jobs observed,
cancelled and stopped with Slurm's own commands.

Submitting is ours outright (`submit_script`): the script is the text hpcmarker rendered from its
templates (so `--dry-run` prints exactly what is sent), dependencies travel on the `sbatch` command line,
and each sbatch's call (one per array, per service replica, for the collector) is pickled where our job runner
(util/jobrun.py, the job's command) loads it: `RUN/jobs/<job id>.call`.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

from hpc_marker.executors.base import (
    Fit,
    GrowRefused,
    JobsSeen,
    Observation,
    RunJobs,
    SubmitFailed,
    WaitHook,
    accounted_job_ids,
    live_job_ids,
    service_replicas,
)
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import RunRecord
from hpc_marker.slurm import commands
from hpc_marker.slurm.arrays import ArrayLayout, convert_roles, layout
from hpc_marker.slurm.commands import SlurmError
from hpc_marker.slurm.parse import (
    JobClock,
    base_id,
    base_ids,
    expand_queued_id,
    parse_dependency,
)
from hpc_marker.slurm.wedge import describe, find_wedge
from hpc_marker.util.errors import UserError
from hpc_marker.util.files import atomic_write
from hpc_marker.util.jobrun import CALL_SUFFIX, JobCall, job_logs, runner_command, write_call
from hpc_marker.util.memory import arrow_pool_environment

QUEUE_DRAIN_TIMEOUT_S = 60.0
CLOCKS_FILE = "sacct-clocks.json"  # in the run folder: the finished jobs' sacct clocks (accounting)
Clocks = dict[str, tuple[JobClock, ...]]


class ClusterRequestError(UserError):
    """The request does not fit the cluster (partition, GPUs); nothing was submitted."""


class CancelError(SlurmError):
    """Some job of the run is still there after cancelling."""


def job_command(python: str, folder: Path) -> list[str]:
    """The command every job runs: our runner on the run's jobs folder (it loads `<job id>.call` there)."""
    return runner_command(python, folder)


def job_log_paths(folder: Path, array: bool) -> tuple[str, str]:
    """stdout/stderr patterns (sbatch's `%j`, or `%A_%a` for an array task) as a job's logs are named."""
    out, err = job_logs(folder, "%A_%a" if array else "%j")
    return str(out), str(err)


def submit_script(
    folder: Path,
    script: str,
    call: JobCall,
    *,
    array: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    dependency: str | None = None,
) -> list[str]:
    """`sbatch` the rendered `script` as is: one job, or an array (`array`: its Slurm indices, and the task index
    each appends to `call`). The call is pickled first and renamed to `<job id>.call` once sbatch has answered,
    where the runner of every job of it loads it (one file per sbatch, not per array task); the script is kept
    as `<job id>_submission.sh`. The job ids ('123', or '123_4' per array task)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f".submitting-{uuid.uuid4().hex}"
    call_file, script_file = stem.with_name(f"{stem.name}{CALL_SUFFIX}"), stem.with_name(f"{stem.name}.sh")
    if array is not None:
        indices, tasks = array
        call = replace(call, tasks=dict(zip(indices, tasks, strict=True)))
    try:
        write_call(call_file, call)
        script_file.write_text(script)
        job_id = commands.submit(script_file, dependency)
    except BaseException:  # nothing queued: nothing of it left in the jobs folder
        for path in (script_file, call_file):
            path.unlink(missing_ok=True)
        raise
    script_file.rename(folder / f"{job_id}_submission.sh")
    call_file.rename(folder / f"{job_id}{CALL_SUFFIX}")  # its jobs wait a minute for it
    return [f"{job_id}_{index}" for index in array[0]] if array is not None else [job_id]


def _undone(queued: list[str]) -> str:
    """What a failed submission says of the jobs it cancelled again."""
    return f"; cancelled what it had queued ({', '.join(base_ids(queued))})" if queued else ""


def _queue_tasks(
    paths: RunPaths,
    scripts: dict[str, str],
    layout: ArrayLayout,
    jobs: RunJobs,
    dependency: str | None,
    ids: dict[str, list[str]],
    seen: JobsSeen | None,
) -> None:
    """Each array of `layout` (one call each: its tasks' global indices by Slurm index); `ids["convert"]` gets
    their ids as they are queued."""
    ids["convert"] = []
    for role, array in zip(convert_roles(len(layout.arrays)), layout.arrays, strict=False):
        ids["convert"] += submit_script(
            paths.jobs,
            scripts[role],
            JobCall(jobs.convert, (str(paths.root),)),
            array=(array.indices, array.tasks),
            dependency=dependency,
        )
        if seen:
            seen(dict(ids))  # `cancel` finds the arrays queued so far


class SlurmExecutor:
    name = "slurm"
    waits = False

    def check_resources(self, partition: str | None, gpus: int) -> str | None:
        if gpus < 1:
            raise ClusterRequestError(f"--gpus {gpus}: a Slurm run needs at least one GPU")
        try:
            known = commands.partitions()
            chosen = partition or commands.default_partition()
        except SlurmError as exc:
            raise ClusterRequestError(
                f"cannot reach Slurm: {exc} (sbatch is on PATH; to run on this machine instead: --executor local, "
                "or HPCMARKER_SUBMIT_EXECUTOR=local)"
            ) from None
        if partition and partition not in known:
            raise ClusterRequestError(
                f"--partition {partition}: no such partition; partitions here: {', '.join(sorted(known)) or '(none)'}"
            )
        if chosen and "gpu" not in known.get(chosen, ""):
            raise ClusterRequestError(
                f"partition {chosen!r} has no GPUs (GRES {known.get(chosen) or 'none'}); "
                "choose another with --partition"
            )
        return chosen

    def fit(self, gpus: int, workers_per_gpu: int, engine: str, mps: str = "auto") -> Fit:
        """As asked: each task gets its own GPU from Slurm."""
        return Fit(gpus)

    def check_scripts(self, scripts: dict[str, str]) -> None:
        """`sbatch --test-only` of each role's first script: a request no node or partition can ever run
        (more CPUs, memory or GPUs than a node has) is refused now instead of pending forever."""
        tested: set[str] = set()
        for name, text in scripts.items():
            role = name.split("-", 1)[0]  # convert-1 asks for what convert-0 does
            if role in tested:
                continue
            tested.add(role)
            try:
                commands.test_only(text)
            except SlurmError as exc:
                if commands.unreachable(str(exc)):
                    raise
                raise ClusterRequestError(
                    f"Slurm would never run the {role} job: {exc}; ask for less "
                    "(--cpus-per-task, --mem, --time, GRES) or another --partition"
                ) from None

    def task_arrays(self, record: RunRecord, tasks: list[int], other_jobs: int) -> ArrayLayout:
        try:
            limits = commands.array_limits(record.job_settings.account, record.partition)
        except SlurmError as exc:
            raise ClusterRequestError(f"cannot read the cluster's limits: {exc}") from None
        return layout(tasks, limits, record.max_running, other_jobs)

    def submit(
        self,
        paths: RunPaths,
        record: RunRecord,
        scripts: dict[str, str],
        layout: ArrayLayout,
        jobs: RunJobs,
        progress: WaitHook | None = None,
        seen: JobsSeen | None = None,
    ) -> dict[str, list[str]]:
        """The service (if any), the arrays of `layout` after it, and the collector after every array."""
        ids: dict[str, list[str]] = {}
        dependency = None
        try:  # never leave part of a run queued: on a refusal, cancel what this submission queued
            if "service" in scripts and jobs.service is not None:  # one job per LLM replica, each its own GPUs
                ids["service"] = []
                for replica in range(service_replicas(record)):
                    ids["service"] += submit_script(
                        paths.jobs, scripts["service"], JobCall(jobs.service, (str(paths.root), replica))
                    )
                if seen:
                    seen(dict(ids))  # tasks and `cancel` find the service jobs meanwhile
                dependency = "?".join(f"after:{jid}" for jid in ids["service"])  # once any replica has started
            return ids | self._submit_arrays(paths, scripts, layout, jobs, dependency, ids, seen)
        except SlurmError as exc:
            queued = [jid for role_ids in ids.values() for jid in role_ids]
            if queued:
                commands.cancel_jobs(queued)
            raise SubmitFailed(f"{exc}{_undone(queued)}") from None

    @staticmethod
    def _submit_arrays(
        paths: RunPaths,
        scripts: dict[str, str],
        layout: ArrayLayout,
        jobs: RunJobs,
        dependency: str | None,
        ids: dict[str, list[str]],
        seen: JobsSeen | None,
    ) -> dict[str, list[str]]:
        """Each array of `layout` (its pickled call carries the global task indices), then the collector
        `afterany` on all of them. `ids` gets each role's ids as they are queued."""
        _queue_tasks(paths, scripts, layout, jobs, dependency, ids, seen)
        arrays = ":".join(base_ids(ids["convert"]))
        collect = JobCall(jobs.collect, (str(paths.root),), environ=arrow_pool_environment())
        ids["collect"] = submit_script(paths.jobs, scripts["collect"], collect, dependency=f"afterany:{arrays}")
        return {role: ids[role] for role in ("convert", "collect")}

    def grow(
        self,
        paths: RunPaths,
        record: RunRecord,
        scripts: dict[str, str],
        layout: ArrayLayout,
        jobs: RunJobs,
        seen: JobsSeen | None = None,
    ) -> list[str]:
        """The arrays of `layout` (no dependency: the service, if any, runs already; the tasks wait for it), then
        the round's pending collector `afterany` on them too (`scontrol update`, with what it still waits for)."""
        collector = record.jobs.get("collect", [])
        waiting = [
            dep.job_id.split("_")[0]
            for job in commands.queue(collector)
            if job.state == "PENDING"
            for dep in parse_dependency(job.dependency)
            if dep.state != "fulfilled"
        ]
        if not waiting:
            raise GrowRefused(
                f"run {record.run_id} is not running any more: its collector {', '.join(collector) or '(none)'} "
                "waits for no task"
            )
        ids: dict[str, list[str]] = {}
        try:
            _queue_tasks(paths, scripts, layout, jobs, None, ids, seen)
        except SlurmError as exc:
            commands.cancel_jobs(ids["convert"])
            raise SubmitFailed(f"{exc}{_undone(ids['convert'])}") from None
        after = ":".join(dict.fromkeys(waiting + base_ids(ids["convert"])))
        try:
            commands.update_dependency(collector[0], f"afterany:{after}")
        except SlurmError as exc:  # it started meanwhile: the round is over
            commands.cancel_jobs(ids["convert"])
            raise GrowRefused(
                f"run {record.run_id} is not running any more: its collector {collector[0]} would not wait "
                f"({exc}){_undone(ids['convert'])}"
            ) from None
        return ids["convert"]

    def observe(
        self, paths: RunPaths, record: RunRecord, finished_tasks: set[int], collected: bool, cancel_wedged: bool = False
    ) -> Observation:
        ids = live_job_ids(record)
        states, clocks = self._ask(paths, record, ids)  # the one sacct query: states, and clocks for accounting
        if not any(states.get(jid, "UNKNOWN") in {"PENDING", "UNKNOWN"} for jid in ids):
            return Observation(states, clocks=clocks)  # only a pending job can wait forever (sacct may not know it)
        queued = commands.queue(ids)
        pending = {jid: job.reason for job in queued if job.state == "PENDING" for jid in expand_queued_id(job.job_id)}
        wedge = find_wedge(record.jobs, queued, states)
        if wedge is None:
            return Observation(states, pending=pending, clocks=clocks)
        if not cancel_wedged:
            return Observation(states, describe(record.run_id, wedge, cancelled=False), pending=pending, clocks=clocks)
        self._cancel_and_drain(list(wedge.queued))  # raises unless every one of them has left the queue
        gone = set(base_ids(list(wedge.queued)))  # sacct may call a job that never started PENDING a while longer
        states = {
            jid: "CANCELLED" if state in {"PENDING", "UNKNOWN"} and base_id(jid) in gone else state
            for jid, state in commands.job_states(ids).items()
        }
        return Observation(states, describe(record.run_id, wedge, cancelled=True), cancelled=list(wedge.queued))

    def clocks(self, paths: RunPaths, record: RunRecord) -> Clocks:
        return self._ask(paths, record, [])[1]

    @staticmethod
    def _ask(paths: RunPaths, record: RunRecord, ids: list[str]) -> tuple[dict[str, str], Clocks]:
        """One sacct query: the states of `ids`, and the clocks of the jobs accounting counts but those whose
        (finished) clocks the run folder keeps."""
        cache = paths.root / CLOCKS_FILE
        try:
            rows = json.loads(cache.read_text(encoding="utf-8"))
            kept = {
                jid: tuple(JobClock(**run) for run in (runs if isinstance(runs, list) else [runs]))
                for jid, runs in rows.items()
            }
        except (OSError, ValueError, TypeError, AttributeError):
            kept = {}
        accounted = accounted_job_ids(record)
        states, fresh = commands.job_accounting(ids, [jid for jid in accounted if jid not in kept and jid not in ids])
        fresh = {jid: runs for jid, runs in fresh.items() if jid in accounted}
        done = {jid: runs for jid, runs in fresh.items() if runs[-1].finished and jid not in kept}
        if done:
            kept.update(done)
            with contextlib.suppress(OSError):  # only a cache: a read-only run folder asks sacct again next time
                atomic_write(cache, json.dumps({jid: [asdict(run) for run in runs] for jid, runs in kept.items()}))
        return states, {**kept, **fresh}

    def active(self, record: RunRecord) -> list[str]:
        return commands.queued_jobs(live_job_ids(record))

    def cancel(self, record: RunRecord) -> list[str]:
        ids = live_job_ids(record)
        self._cancel_and_drain(ids)
        return ids

    def stop_service(self, record: RunRecord) -> list[str]:
        ids = record.jobs.get("service", [])
        if ids:
            commands.cancel_jobs(ids)
        return ids

    @staticmethod
    def _cancel_and_drain(ids: list[str], drain_timeout_s: float = QUEUE_DRAIN_TIMEOUT_S) -> None:
        commands.cancel_jobs(ids)
        deadline = time.monotonic() + drain_timeout_s
        while (left := commands.queued_jobs(ids)) and time.monotonic() < deadline:
            time.sleep(1.0)
        if left:
            raise CancelError(f"still in squeue after {drain_timeout_s:.0f}s: {', '.join(left)}")
