"""Launch: scan → plan → render → submit, for one run.

`prepare_run` does everything that does not touch the scheduler and returns the rendered
scripts; `submit_run` sends them (Slurm through submitit, or submitit's local executor where
there is no Slurm). `--dry-run` stops after `prepare_run` and prints the same scripts.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpc_marker.engines import EngineOptions, check_engine
from hpc_marker.engines.marker import marker_version
from hpc_marker.manage.collect import collect_run
from hpc_marker.planning.plan import Plan, make_plan, static_chunks, work_items
from hpc_marker.planning.scan import ScanError, ScannedPdf, scan_pdfs
from hpc_marker.runstate.output import document_dir, document_stem
from hpc_marker.runstate.record import (
    PERMISSIONS,
    RUNS_SUBDIR,
    RunPaths,
    RunRecord,
    file_mode_mask,
    new_run_id,
    private_files,
    register_run,
)
from hpc_marker.runtime.inference import settings_for_run
from hpc_marker.runtime.limits import check_item_limits
from hpc_marker.runtime.task import run_task
from hpc_marker.slurm import commands as slurm
from hpc_marker.submission.templates import ROLES, Raw, render_role, template_folder

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LaunchError(Exception):
    """Bad input or an unusable cluster setting: nothing was submitted."""


class NothingToDo(LaunchError):
    """Every PDF already has an up-to-date output."""


@dataclass
class SubmitRequest:
    pdfs: Path
    out: Path
    gpus: int
    engine: str = "marker"
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    profile: str = "generic"
    # None: the profile's value (then the built-in default)
    partition: str | None = None
    template: str | None = None
    workers_per_gpu: int = 0  # 0: auto, chosen by each task (sizing.choose_workers)
    cpus_per_task: int | None = None
    mem: str | None = None
    time_limit: str | None = None
    executor: str = "auto"  # auto, slurm, local
    run_id: str | None = None
    split_pages: int | None = None  # None: derived; 0: never split
    steal: bool = True
    lease_seconds: float = 120.0
    strategy: str = "pages"  # "pages", or "static": marker's chunking (no split, no stealing), for comparison
    force: bool = False  # convert PDFs whose outputs are already complete and up to date
    llm: LlmRequest | None = None
    item_timeout: str = "auto"  # see limits.py
    worker_memory: str | None = None
    permissions: str = "private"  # a key of runs.PERMISSIONS
    inference_server: str | None = None  # marker 2.x's per-task server; None or auto: the profile's, else auto
    inference_startup_timeout: float | None = None  # None: inference.DEFAULT_STARTUP_TIMEOUT_S


STRATEGIES = ("pages", "static")


@dataclass
class LlmRequest:
    """`--llm MODEL` and its settings: the run gets an Ollama service job."""

    model: str
    gpus: int = 1
    parallel: int = 4
    ctx: int | None = None
    options: dict = field(default_factory=dict)
    wait_timeout_s: float = 900.0  # how long a task waits for the service before failing
    request_timeout_s: float = 600.0  # per LLM request, at the front
    concurrency: int | None = None  # LLM requests in flight per task (text engine); default: parallel
    cpus: int = 4
    mem: str | None = None
    bind_host: str | None = None  # the front's address (default: this node's hostname address)

    def record(self) -> dict:
        return {"model": self.model, "gpus": self.gpus, "parallel": self.parallel, "ctx": self.ctx,
                "options": self.options, "wait_timeout_s": self.wait_timeout_s,
                "request_timeout_s": self.request_timeout_s, "concurrency": self.concurrency or self.parallel,
                "cpus": self.cpus, "mem": self.mem}


@dataclass
class PreparedRun:
    paths: RunPaths
    record: RunRecord
    plan: Plan
    scanned: list[ScannedPdf]
    scripts: dict[str, str]  # role -> script text
    up_to_date: list[str] = field(default_factory=list)  # PDFs skipped: their outputs are current


def parse_time_limit(text: str) -> int:
    """Slurm time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) to whole minutes (at least 1)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise LaunchError(f"--time {text!r}: use minutes, HH:MM:SS or D-HH:MM:SS")
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


def choose_executor(requested: str) -> str:
    if requested == "auto":
        return "slurm" if slurm.slurm_available() else "local"
    if requested == "slurm" and not slurm.slurm_available():
        raise LaunchError("--executor slurm: sbatch is not on PATH")
    return requested


def _check_out_dir(out: Path, umask: int) -> None:
    try:
        with file_mode_mask(umask):
            out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".hpcmarker-write-test-"):
            pass
    except OSError as exc:
        raise LaunchError(f"--out {out}: cannot write there ({exc.strerror})") from None


def _check_limits(request: SubmitRequest) -> None:
    try:
        check_item_limits(request.item_timeout, request.worker_memory, request.engine)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    if request.permissions not in PERMISSIONS:
        raise LaunchError(f"--permissions {request.permissions!r}: choose from {', '.join(PERMISSIONS)}")


def _check_cluster(request: SubmitRequest, wanted: str | None) -> str | None:
    """Validate partition and GPUs against the live cluster; return the partition to use."""
    if request.gpus < 1:
        raise LaunchError(f"--gpus {request.gpus}: a Slurm run needs at least one GPU")
    try:
        known = slurm.partitions()
    except slurm.SlurmError as exc:
        raise LaunchError(f"cannot reach Slurm: {exc}") from None
    partition = wanted or slurm.default_partition()
    if wanted and wanted not in known:
        raise LaunchError(f"--partition {wanted}: no such partition; "
                          f"partitions here: {', '.join(sorted(known)) or '(none)'}")
    if partition and "gpu" not in known.get(partition, ""):
        raise LaunchError(f"partition {partition!r} has no GPUs (GRES {known.get(partition) or 'none'}); "
                          "choose another with --partition")
    return partition


BUILTIN_DEFAULTS = {"template": "generic", "cpus_per_task": 4, "time": "04:00:00", "gres": "gpu:1"}
RESERVED_VARIABLES = {"run_id", "run_dir", "comment", "partition", "setup", "command", "python", "job_folder",
                      "account", "qos", "constraint", "job_name", "tasks", "array", "gres", "cpus_per_task", "mem",
                      "time", "signal", "stdout", "stderr", "llm_gpus"}


def resolve_profile(request: SubmitRequest) -> tuple[dict, dict]:
    """(effective partition/template/cpus/mem/time, job settings for the templates) for the request."""
    from hpc_marker.config import ConfigError, load_config

    try:
        profile = load_config().profile(request.profile)
    except ConfigError as exc:
        raise LaunchError(f"--profile {exc}") from None
    clash = sorted(set(profile.get("vars", {})) & RESERVED_VARIABLES)
    if clash:
        raise LaunchError(f"profile {request.profile!r}: vars {', '.join(clash)} shadow built-in template variables")
    explicit = {"partition": request.partition, "template": request.template, "cpus_per_task": request.cpus_per_task,
                "mem": request.mem, "time": request.time_limit}
    chosen = {key: value if value is not None else profile.get(key, BUILTIN_DEFAULTS.get(key))
              for key, value in explicit.items()}
    settings = {"gres": profile.get("gres", BUILTIN_DEFAULTS["gres"]), "account": profile.get("account"),
                "qos": profile.get("qos"), "constraint": profile.get("constraint"),
                "setup": list(profile.get("setup", [])), "llm_gres_type": profile.get("llm_gres_type"),
                "vars": dict(profile.get("vars", {}))}
    chosen["inference"] = {key: value for key, value in profile.items() if key.startswith("inference_")}
    return chosen, settings


def script_contexts(paths: RunPaths, record: RunRecord, python: str,
                    task_indices: list[int] | None = None) -> dict[str, dict]:
    """The variables each role's template sees (for all tasks, or only `task_indices`). Pure."""
    indices = task_indices if task_indices is not None else list(range(record.tasks))
    convert_out, convert_err = slurm.job_log_paths(paths.jobs, array=True)
    collect_out, collect_err = slurm.job_log_paths(paths.jobs, array=False)
    command = Raw(shlex.join(slurm.submitit_command(python, paths.jobs)))
    job = record.job_settings
    common = dict(job.get("vars", {}), run_id=record.run_id, run_dir=str(paths.root),
                  comment=f"hpcmarker:{record.run_id}", partition=record.partition,
                  setup=[Raw(line) for line in job.get("setup", [])], command=command, python=python,
                  job_folder=str(paths.jobs), account=job.get("account"), qos=job.get("qos"),
                  constraint=job.get("constraint"))
    contexts = {}
    if record.llm:
        service_out, service_err = slurm.job_log_paths(paths.jobs, array=False)
        gpu_type = f"{job['llm_gres_type']}:" if job.get("llm_gres_type") else ""
        contexts["service"] = dict(common, job_name=f"hpcmarker-{record.run_id}-llm", llm_gpus=record.llm["gpus"],
                                   gres=f"gpu:{gpu_type}{record.llm['gpus']}", cpus_per_task=record.llm["cpus"],
                                   mem=record.llm["mem"], time=record.time_limit, stdout=service_out,
                                   stderr=service_err)
    # B: signals the batch shell, which execs Python; without B: Slurm signals only job steps (there are none)
    return contexts | {
        "convert": dict(common, job_name=f"hpcmarker-{record.run_id}-convert", tasks=len(indices),
                        array=slurm.array_spec(indices), gres=job.get("gres", BUILTIN_DEFAULTS["gres"]), cpus_per_task=record.cpus_per_task,
                        mem=record.mem, time=record.time_limit, signal="B:USR2@90",
                        stdout=convert_out, stderr=convert_err),
        "collect": dict(common, job_name=f"hpcmarker-{record.run_id}-collect", time="00:30:00",
                        stdout=collect_out, stderr=collect_err),
    }


@private_files
def prepare_run(request: SubmitRequest, *, create: bool = True) -> PreparedRun:
    """Scan, plan, create the run folder (if `create`) and render its scripts."""
    executor = choose_executor(request.executor)
    chosen, job_settings = resolve_profile(request)
    if request.workers_per_gpu < 0:
        raise LaunchError(f"--workers-per-gpu {request.workers_per_gpu}: must be at least 1 (or auto)")
    if request.gpus < 0:
        raise LaunchError(f"--gpus {request.gpus}: must not be negative")
    parse_time_limit(chosen["time"])
    _check_limits(request)
    try:
        template_folder(chosen["template"])
        check_engine(request.engine, request.engine_options)
        inference = settings_for_run(request.inference_server, chosen["inference"], request.engine, marker_version(),
                                     request.inference_startup_timeout)  # InferenceConfigError: one line
    except Exception as exc:  # TemplateError, EngineUnavailable: one line each
        raise LaunchError(str(exc)) from None
    partition = _check_cluster(request, chosen["partition"]) if executor == "slurm" else chosen["partition"]
    pdfs = request.pdfs.resolve()
    try:
        scanned = scan_pdfs(pdfs)
    except ScanError as exc:
        raise LaunchError(f"--pdfs {exc}") from None
    out = request.out.resolve()
    _check_out_dir(out, PERMISSIONS[request.permissions])
    up_to_date = [] if request.force else [pdf.relpath for pdf in scanned if output_is_current(out, pdf)]
    todo = [pdf for pdf in scanned if pdf.relpath not in set(up_to_date)]
    if not todo:
        raise NothingToDo(f"all {len(scanned)} PDFs already have up-to-date outputs in {out} (--force redoes them)")

    run_id = request.run_id or new_run_id()
    if not RUN_ID_PATTERN.match(run_id):
        raise LaunchError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-'")
    paths = RunPaths(out / RUNS_SUBDIR / run_id)
    if create and paths.root.exists():
        raise LaunchError(f"run {run_id} already exists at {paths.root}")
    if request.strategy not in STRATEGIES:
        raise LaunchError(f"--plan-strategy {request.strategy!r}: choose from {', '.join(STRATEGIES)}")
    items = work_items(todo)
    if request.strategy == "static":
        plan = static_chunks(items, max(1, request.gpus))
    else:
        plan = make_plan(items, max(1, request.gpus), split_pages=request.split_pages)
    record = RunRecord(
        run_id=run_id, created=time.time(), pdfs_root=str(pdfs), out_dir=str(out), engine=request.engine,
        engine_options=request.engine_options.to_json(), executor=executor, tasks=len(plan.tasks),
        gpus=request.gpus, workers_per_gpu=request.workers_per_gpu, cpus_per_task=chosen["cpus_per_task"],
        mem=chosen["mem"], template=chosen["template"], partition=partition, time_limit=chosen["time"],
        profile=request.profile, job_settings=job_settings,
        steal=request.steal and request.strategy != "static", lease_seconds=request.lease_seconds,
        split_pages=request.split_pages, llm=request.llm.record() if request.llm else None,
        item_timeout=request.item_timeout, worker_memory=request.worker_memory,
        umask=PERMISSIONS[request.permissions],
        inference=inference.to_record() if inference else None,
    )
    contexts = script_contexts(paths, record, python=sys.executable)
    try:
        scripts = {role: render_role(record.template, role, contexts[role]) for role in ROLES if role in contexts}
    except Exception as exc:
        raise LaunchError(str(exc)) from None
    if create:
        paths.create()
        plan.save(paths.plan)
        paths.save_record(record)
        if request.llm:
            _write_llm_settings(paths, request.llm)
        for role, text in scripts.items():
            (paths.scripts / f"{role}.sbatch").write_text(text)
    return PreparedRun(paths=paths, record=record, plan=plan, scanned=todo, scripts=scripts, up_to_date=up_to_date)


def _write_llm_settings(paths: RunPaths, llm: LlmRequest) -> None:
    from hpc_marker.llm.settings import LlmPaths, LlmSettings, SettingsError

    settings = LlmSettings(model=llm.model, parallel=llm.parallel, ctx=llm.ctx, options=dict(llm.options),
                           request_timeout_s=llm.request_timeout_s, bind_host=llm.bind_host)
    try:
        settings.validate()
    except SettingsError as exc:
        raise LaunchError(str(exc).replace("settings.json: ", "--llm ")) from None
    llm_paths = LlmPaths(paths.root)
    llm_paths.create()
    llm_paths.save_settings(settings)


def output_is_current(out: Path, pdf: ScannedPdf) -> bool:
    """The PDF's document exists, whole, and was made from this very file (size and mtime)."""
    folder = document_dir(out, pdf.relpath)
    meta = folder / f"{document_stem(pdf.relpath)}_meta.json"
    if not (folder / f"{document_stem(pdf.relpath)}.md").is_file() or not meta.is_file():
        return False
    try:
        source = json.loads(meta.read_text(encoding="utf-8")).get("hpcmarker_source", {})
        stat = pdf.path.stat()
    except (OSError, ValueError, AttributeError):
        return False
    return source.get("size") == stat.st_size and source.get("mtime_ns") == stat.st_mtime_ns


@private_files
def submit_run(prepared: PreparedRun, progress=None) -> RunRecord:
    """Send the prepared run to its executor and record the job ids."""
    record, paths = prepared.record, prepared.paths
    register_run(paths)
    if record.executor == "slurm":
        jobs = _submit_slurm(prepared)
    else:
        from hpc_marker.executors.local import submit_local

        jobs = submit_local(paths, record, progress=progress)
    record.jobs = jobs
    record.submitted = time.time()
    paths.save_record(record)
    return record


def _submit_slurm(prepared: PreparedRun) -> dict[str, list[str]]:
    return submit_scripts_slurm(prepared.paths, prepared.record, prepared.scripts, list(range(prepared.record.tasks)))


def submit_scripts_slurm(paths: RunPaths, record: RunRecord, scripts: dict[str, str],
                         indices: list[int]) -> dict[str, list[str]]:
    """Submit the service (if any), the array of tasks `indices` after it, and the collector after the array."""
    timeout_min = parse_time_limit(record.time_limit)
    jobs: dict[str, list[str]] = {}
    dependency = None
    if "service" in scripts:
        from hpc_marker.llm.service import serve_llm

        service = slurm.TemplateSlurmExecutor(paths.jobs, scripts["service"], timeout_min=timeout_min)
        jobs["service"] = [service.submit(serve_llm, str(paths.root)).job_id]
        record.jobs = dict(record.jobs, service=jobs["service"])
        paths.save_record(record)  # tasks and `cancel` find the service job meanwhile
        dependency = f"after:{jobs['service'][0]}"  # the array starts once the service has started
    convert = slurm.TemplateSlurmExecutor(paths.jobs, scripts["convert"], dependency=dependency,
                                          array_indices=indices, timeout_min=timeout_min)
    tasks = convert.submit_array([functools.partial(run_task, str(paths.root), i) for i in indices])
    array_id = tasks[0].job_id.split("_")[0]
    collect = slurm.TemplateSlurmExecutor(paths.jobs, scripts["collect"], timeout_min=30,
                                          dependency=f"afterany:{array_id}")
    collector = collect.submit(collect_run, str(paths.root))
    return jobs | {"convert": [job.job_id for job in tasks], "collect": [collector.job_id]}


def dry_run_text(prepared: PreparedRun) -> str:
    """What `submit --dry-run` prints: each role's header line, then its script byte for byte."""
    dependencies = {"convert": "--dependency=after:<service job id> " if "service" in prepared.scripts else "",
                    "collect": "--dependency=afterany:<convert job id> ", "service": ""}
    parts = []
    for role in ROLES:
        if role in prepared.scripts:
            parts.append(f"### hpcmarker dry-run: {role} (sent as: sbatch {dependencies[role]}{role}.sbatch)\n")
            parts.append(prepared.scripts[role])
    return "".join(parts)


def split_dry_run(text: str) -> dict[str, str]:
    """Inverse of dry_run_text: role -> script text."""
    scripts: dict[str, str] = {}
    pieces = re.split(r"^### hpcmarker dry-run: (\w+) \(.*\)\n", text, flags=re.M)
    for role, body in zip(pieces[1::2], pieces[2::2]):
        scripts[role] = body
    return scripts
