"""Launch: scan → plan → render → submit, for one run.

`prepare_run` does everything that does not touch the scheduler and returns the rendered
scripts; `submit_run` hands them to the run's executor. `--dry-run` stops after `prepare_run`
and prints the same scripts.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_marker.engines import check_engine
from hpc_marker.engines.marker import marker_version
from hpc_marker.executors import RunJobs, choose_executor, executor_for
from hpc_marker.executors.base import NO_JOB, REPLACED, Executor, Fit, SubmitFailed, WaitHook, live_job_ids
from hpc_marker.manage.rounds import new_round
from hpc_marker.planning.plan import Plan, WorkItem, make_plan, static_chunks, work_items
from hpc_marker.planning.scan import ScanError, ScannedPdf, scan_pdfs
from hpc_marker.planning.store import save_plan
from hpc_marker.planning.textcheck import OcrRouting
from hpc_marker.quality.document import thresholds
from hpc_marker.runstate.index import forget_run, register_run
from hpc_marker.runstate.layout import RUNS_SUBDIR, RunPaths
from hpc_marker.runstate.outlock import Holder, acquire, age, release
from hpc_marker.runstate.permissions import PERMISSIONS, private_files
from hpc_marker.runstate.record import RunRecord, new_run_id
from hpc_marker.runtime.inference import (
    InferenceConfigError,
    InferenceSettings,
    server_preflight,
    settings_for_run,
)
from hpc_marker.runtime.mps import check_mode
from hpc_marker.slurm.arrays import ArrayLayout
from hpc_marker.submission.outputs import document_names, name_notes, outputs_to_make
from hpc_marker.submission.request import (
    LaunchError,
    LlmRequest,
    SubmitRequest,
    check_out_dir,
    check_request,
    resolve_profile,
)
from hpc_marker.submission.scripts import other_jobs, render_scripts
from hpc_marker.submission.templates import template_folder
from hpc_marker.util.logs import JobEntry
from hpc_marker.util.text import plural


@dataclass
class PreparedRun:
    paths: RunPaths
    record: RunRecord
    plan: Plan
    scanned: list[ScannedPdf]
    scripts: dict[str, str]  # script name -> text: service, convert (one per array), collect
    layout: ArrayLayout  # the tasks' job arrays
    up_to_date: list[str] = field(default_factory=list)  # PDFs skipped: their outputs are current
    notes: list[str] = field(default_factory=list)  # one line each, for the user (fewer tasks, long names, limits)


def run_jobs(record: RunRecord) -> RunJobs:
    """What each role's job of this run calls."""
    from hpc_marker.manage.collect import collect_job
    from hpc_marker.runtime.task import run_task

    service = None
    if record.llm:
        from hpc_marker.llm.service import serve_llm

        service = JobEntry(serve_llm, "llm")
    return RunJobs(convert=JobEntry(run_task, "task"), collect=JobEntry(collect_job, "collect"), service=service)


@dataclass(frozen=True)
class Resolved:
    """A request checked and resolved before anything is scanned: its executor, the profile's values over the
    config's (`chosen`: partition, template, cpus_per_task, mem, time, inference keys, mps, llm), the job
    settings for the templates, marker 2.x's inference server, the partition and how many tasks fit."""

    executor: Executor
    chosen: dict[str, Any]
    job_settings: dict[str, Any]
    inference: InferenceSettings | None
    partition: str | None
    fit: Fit


@private_files
def prepare_run(request: SubmitRequest, *, create: bool = True) -> PreparedRun:
    """Scan, plan, create the run folder (if `create`) and render its scripts."""
    resolved = resolve_request(request)
    pdfs, out = request.pdfs.resolve(), request.out.resolve()
    routing = OcrRouting.from_config() if request.engine_options.ocr_auto else None  # --force-ocr auto
    try:
        scanned = scan_pdfs(
            pdfs,
            request.scan_workers,
            cache=True,
            progress=request.progress,
            only=request.only,
            sample_pages=routing.sample_pages if routing else 0,
        )
    except ScanError as exc:
        raise LaunchError(f"--pdfs {exc}") from None
    check_out_dir(out, PERMISSIONS[request.permissions])
    names = document_names(request, out, scanned)
    up_to_date, todo = outputs_to_make(request, out, scanned, names)
    notes = name_notes(request, todo, names)
    run_id = request.run_id or new_run_id()
    paths = RunPaths(out / RUNS_SUBDIR / run_id)
    if create and paths.root.exists():
        raise LaunchError(f"run {run_id} already exists at {paths.root}")
    plan = plan_run(request, work_items(todo, names, routing), resolved.fit, len(todo), notes, routing)
    record = run_record(request, resolved, run_id=run_id, pdfs=pdfs, out=out, plan=plan)
    executor = resolved.executor
    layout = executor.task_arrays(record, list(range(record.tasks)), other_jobs(record))  # refused: nothing made
    scripts = render_scripts(paths, record, python=sys.executable, layout=layout)
    executor.check_scripts(scripts)  # a request the cluster can never run: refused now, not pending forever
    if create:
        llm = resolved.chosen.get("llm")
        _create_run_folder(paths, record, plan, scripts, llm, hold_out=not request.force_concurrent)
    return PreparedRun(
        paths=paths,
        record=record,
        plan=plan,
        scanned=todo,
        scripts=scripts,
        layout=layout,
        up_to_date=up_to_date,
        notes=notes + ([layout.note] if layout.note else []),
    )


def resolve_request(request: SubmitRequest) -> Resolved:
    """The request checked (LaunchError, one line) and resolved against its profile, engine and executor."""
    executor = executor_for(choose_executor(request.executor))
    chosen, job_settings = resolve_profile(request)
    check_request(request, chosen)
    template_folder(chosen["template"])
    check_engine(request.engine, request.engine_options)
    check_mode(chosen["mps"])
    try:
        inference = settings_for_run(
            request.inference_server,
            chosen["inference"],
            request.engine,
            marker_version(),
            request.inference_startup_timeout,
        )
    except InferenceConfigError as exc:
        raise LaunchError(str(exc)) from None
    missing = server_preflight(inference, marker_version())  # the jobs' Python and PATH are this shell's, unless
    if missing and not job_settings.setup and chosen["template"] != "apptainer":  # the profile changes them
        raise LaunchError(f"--inference-server {inference.mode}: {missing}")
    partition = executor.check_resources(chosen["partition"], request.gpus)
    fit = executor.fit(request.gpus, request.workers_per_gpu, request.engine, chosen["mps"])  # local: this machine
    return Resolved(executor, chosen, job_settings, inference, partition, fit)


def plan_run(
    request: SubmitRequest,
    items: Sequence[WorkItem],
    fit: Fit,
    pdfs: int,
    notes: list[str],
    routing: OcrRouting | None = None,
) -> Plan:
    """The run's plan for the tasks that fit (`routing`: --force-ocr auto's page weight); a note (into `notes`)
    when it has fewer tasks than --gpus."""
    tasks = max(1, fit.tasks)
    if request.plan_strategy == "static":
        plan = static_chunks(items, tasks)
    else:
        weight = routing.page_weight if routing else 1.0
        plan = make_plan(items, tasks, request.split_pages, request.min_task_pages, page_weight=weight)
    if request.plan_strategy != "static" and len(plan.tasks) < fit.tasks:  # the work, not the machine, bounds it
        notes.append(fewer_tasks_note(request.gpus, plan, pdfs, request.min_task_pages))
    elif fit.note:
        notes.append(fit.note)
    return plan


def run_record(
    request: SubmitRequest, resolved: Resolved, *, run_id: str, pdfs: Path, out: Path, plan: Plan
) -> RunRecord:
    """The run record of a request: the one place a run's record is made from what was asked."""
    chosen, llm, inference = resolved.chosen, resolved.chosen.get("llm"), resolved.inference
    return RunRecord(
        run_id=run_id,
        created=time.time(),
        pdfs_root=str(pdfs),
        out_dir=str(out),
        engine=request.engine,
        engine_options=request.engine_options,
        executor=resolved.executor.name,
        tasks=len(plan.tasks),
        gpus=request.gpus,
        workers_per_gpu=request.workers_per_gpu,
        cpus_per_task=chosen["cpus_per_task"],
        mem=chosen["mem"],
        template=chosen["template"],
        partition=resolved.partition,
        time_limit=chosen["time"],
        profile=request.profile,
        job_settings=resolved.job_settings,
        steal=request.steal and request.plan_strategy != "static",
        lease_seconds=request.lease_seconds,
        split_pages=request.split_pages,
        llm=llm.record() if llm else None,
        mps=chosen["mps"],
        quality=thresholds({"max_output_mb_per_page": request.max_output_mb_per_page}),
        item_timeout=request.item_timeout,
        worker_memory=request.worker_memory,
        umask=PERMISSIONS[request.permissions],
        inference=inference,
        max_running=request.max_running,
        parent=request.parent,
        bisect=request.bisect,
        items=len(plan.items),
        max_rounds=request.max_rounds,
        start_jitter=str(request.start_jitter),
    )


def _create_run_folder(
    paths: RunPaths, record: RunRecord, plan: Plan, scripts: dict[str, str], llm: LlmRequest | None, hold_out: bool
) -> None:
    """The run folder with its plan, record, LLM settings and scripts, holding --out (unless told not to).
    Whatever stops it half-way (Ctrl-C, a full disk) leaves no folder and --out free."""
    out = Path(record.out_dir)
    if hold_out:
        acquire(out, record.run_id, active_jobs_of(out))
    try:
        paths.create()
        save_plan(plan, paths.plan)
        paths.save_record(record)
        if llm:
            _write_llm_settings(paths, llm, record.engine)
        for role, text in scripts.items():
            (paths.scripts / f"{role}.sbatch").write_text(text)
    except BaseException:
        discard_run(paths, record)
        raise


def fewer_tasks_note(gpus: int, plan: Plan, pdfs: int, min_task_pages: int) -> str:
    """The one line that says why a run has fewer tasks than --gpus. Pure."""
    tasks = len(plan.tasks)
    why = (
        f"{plural(len(plan.items), 'work item')}, one per task at most"
        if tasks == len(plan.items)
        else f"{plural(plan.total_pages, 'page')}; each task gets at least {min_task_pages}: --min-task-pages"
    )
    return f"note: --gpus {gpus}: {plural(tasks, 'task')} for {plural(pdfs, 'PDF')} ({why})"


SUBMITTING_GRACE_S = 600.0  # a run that holds its --out but has no jobs yet is being submitted, for this long


def active_jobs_of(out: Path):
    """For outlock.acquire: what the run holding `out` still has queued or running ([] when it is over)."""

    def still_active(current: Holder) -> list[str]:
        paths = RunPaths(out / RUNS_SUBDIR / current.run_id)
        try:
            record = paths.load_record()
        except (OSError, ValueError, TypeError):  # its folder is gone (deleted by hand, or a failed submission)
            return []
        if not live_job_ids(record):
            return ["being submitted"] if age(current) < SUBMITTING_GRACE_S else []
        return executor_for(record.executor).active(record)

    return still_active


def discard_run(paths: RunPaths, record: RunRecord) -> None:
    """A submission the scheduler refused: no run folder, no entry in the user's runs, the --out free."""
    forget_run(paths)
    release(Path(record.out_dir), record.run_id)
    shutil.rmtree(paths.root, ignore_errors=True)


def _write_llm_settings(paths: RunPaths, llm: LlmRequest, engine: str) -> None:
    from hpc_marker.llm.settings import LlmPaths, LlmSettings, SettingsError

    check = llm.check if llm.check != "auto" else "marker" if engine == "marker" else "chat"  # what the engine sends
    settings = LlmSettings(
        model=llm.model,
        server=llm.server or "ollama",
        parallel=llm.parallel,
        replicas=llm.replicas,
        gpus=llm.gpus,
        ctx=llm.ctx,
        options=dict(llm.options),
        server_args=list(llm.server_args),
        image=llm.image,
        request_timeout_s=llm.request_timeout_s,
        bind_host=llm.bind_host,
        check=check,
    )
    try:
        settings.validate()
    except SettingsError as exc:
        raise LaunchError(str(exc).replace("settings.json: ", "--llm ")) from None
    llm_paths = LlmPaths(paths.root)
    llm_paths.create()
    llm_paths.save_settings(settings)


def record_jobs(
    paths: RunPaths, record: RunRecord, ids: dict[str, list[str]], indices: list[int] | None = None
) -> None:
    """Put the job ids of a (re)submission into the run record and save it. For a resubmission of
    the tasks `indices`, each replaces that task's job (kept as REPLACED, for accounting). Only the jobs
    change on disk: what others wrote meanwhile (`hpcmarker cancel` marking the run, tasks `hpcmarker grow` added
    past this record's) is kept."""
    stored = paths.load_record()
    jobs = {role: list(values) for role, values in record.jobs.items()}
    for role, new in ids.items():
        if role == "convert" and indices is not None and jobs.get("convert"):
            for index, job_id in zip(
                indices, new, strict=False
            ):  # (ids come as each job starts: the list may be short yet)
                jobs["convert"] += [NO_JOB] * (index + 1 - len(jobs["convert"]))
                if jobs["convert"][index] not in (NO_JOB, job_id):
                    jobs.setdefault(REPLACED, []).append(f"{index}:{jobs['convert'][index]}")
                jobs["convert"][index] = job_id
        else:
            jobs[role] = list(new)
    _keep_grown(jobs, stored.jobs.get("convert", []), record.tasks)
    record.jobs = jobs
    stored.jobs, stored.submitted = jobs, record.submitted or stored.submitted
    stored.rounds = stored.rounds or record.rounds  # the rounds on disk: a collector may have closed one
    record.cancelled = stored.cancelled
    paths.save_record(stored)


def _keep_grown(jobs: dict[str, list[str]], on_disk: list[str], planned: int) -> None:
    """Into `jobs`, the job ids on disk of tasks `hpcmarker grow` added (past the `planned` tasks) that `jobs`
    lacks: they were added after the record being saved was read."""
    for index in range(planned, len(on_disk)):
        convert = jobs.setdefault("convert", [])
        convert += [NO_JOB] * (index + 1 - len(convert))
        if convert[index] == NO_JOB:
            convert[index] = on_disk[index]


@private_files
def submit_run(prepared: PreparedRun, progress: WaitHook | None = None) -> RunRecord:
    """Send the prepared run to its executor and record the job ids. A submission the scheduler refused
    leaves nothing behind (SubmitFailed); a run that this call waits for gives its --out back when it ends."""
    record, paths = prepared.record, prepared.paths
    executor = executor_for(record.executor)
    register_run(paths)
    record.rounds = [new_round(record, list(range(record.tasks)), "submit")]  # saved with the first job ids
    try:
        ids = executor.submit(
            paths,
            record,
            prepared.scripts,
            prepared.layout,
            run_jobs(record),
            progress=progress,
            seen=lambda ids: record_jobs(paths, record, ids),
        )
    except SubmitFailed:
        discard_run(paths, record)
        raise
    finally:
        if executor.waits:
            release(Path(record.out_dir), record.run_id)
    record.submitted = time.time()
    record_jobs(paths, record, ids)
    return record
