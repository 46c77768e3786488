"""What the user asked for: SubmitRequest and LlmRequest, the profile they resolve against, and the
checks that refuse bad input before anything is created (one line, exit code 2).

Every default comes from the config (config/defaults.toml, then site and user files):
`SubmitRequest.with_defaults` fills what the caller did not give, as the command line does.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hpc_marker.config import ConfigError, load_config
from hpc_marker.config.options import STRATEGIES, by_field, check_values
from hpc_marker.config.types import parse_workers_per_gpu
from hpc_marker.engines import EngineOptions
from hpc_marker.llm.settings import LlmRecord
from hpc_marker.runstate.permissions import PERMISSIONS, file_mode_mask
from hpc_marker.runstate.record import JobSettings, ParentRun
from hpc_marker.runtime.limits import check_item_limits
from hpc_marker.util.errors import UserError

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LLM_REQUEST_TIMEOUT_S = 600.0  # per LLM request, at the front
# Template variables hpcmarker sets itself: a profile's `vars` must not shadow them.
RESERVED_VARIABLES = {
    "run_id",
    "run_dir",
    "comment",
    "partition",
    "setup",
    "command",
    "python",
    "job_folder",
    "account",
    "qos",
    "constraint",
    "job_name",
    "tasks",
    "array",
    "gres",
    "cpus_per_task",
    "mem",
    "time",
    "signal",
    "stdout",
    "stderr",
    "llm_gpus",
    "llm_server",
    "llm_replicas",
}


class LaunchError(UserError):
    """Bad input or an unusable cluster setting: nothing was submitted."""


class NothingToDo(Exception):
    """Every PDF already has an up-to-date output (not an error: nothing to submit)."""


@dataclass
class LlmRequest:
    """`--llm MODEL` and its settings: the run gets an LLM service (one job per replica)."""

    model: str
    gpus: int  # per replica
    parallel: int  # generations per replica at once
    wait_timeout_s: float  # how long a task waits for the service before failing
    cpus: int  # per replica
    replicas: int = 1
    server: str | None = None  # ollama or vllm; None: the profile's llm_server, else the config's [job] one
    ctx: int | None = None
    options: dict = field(default_factory=dict)
    bind_host: str | None = None  # the front's address (None: this node's hostname address)
    request_timeout_s: float = LLM_REQUEST_TIMEOUT_S
    concurrency: int | None = None  # LLM requests in flight per worker; None: the run's budget (llm/budget.py)
    mem: str | None = None
    image: str | None = None  # vLLM: the profile's llm_image
    server_args: list[str] = field(default_factory=list)  # vLLM: the profile's llm_args
    check: str = "auto"  # the service's capability check (llm/check.py): auto (by engine), marker, chat, off

    def record(self) -> LlmRecord:
        """What the run record keeps of it (RunRecord.llm)."""
        return LlmRecord(
            model=self.model,
            server=self.server or "ollama",
            replicas=self.replicas,
            gpus=self.gpus,
            parallel=self.parallel,
            ctx=self.ctx,
            options=dict(self.options),
            wait_timeout_s=self.wait_timeout_s,
            request_timeout_s=self.request_timeout_s,
            concurrency=self.concurrency,
            cpus=self.cpus,
            mem=self.mem,
            check=self.check,
        )


@dataclass
class SubmitRequest:
    """One `hpcmarker submit`. Fields without a default are options whose default lives in the config."""

    pdfs: Path
    out: Path
    gpus: int
    engine: str
    engine_options: EngineOptions
    profile: str
    workers_per_gpu: int  # 0: auto, chosen by each task
    executor: str  # auto, slurm, local
    steal: bool
    bisect: bool  # a failing item of several pages is cut in halves until its bad pages stand alone
    lease_seconds: float
    plan_strategy: str  # one of STRATEGIES
    item_timeout: str  # see runtime/limits.py
    permissions: str  # a key of PERMISSIONS
    inference_startup_timeout: float
    scan_workers: int  # processes counting pages on the login node (at a low priority)
    min_task_pages: int  # each task gets at least this many pages: fewer tasks than --gpus when the work is small
    max_rounds: int  # rounds of arrays the run may submit itself (continuation); 1: none
    start_jitter: str  # auto or seconds: each task's start-up delay is below it (config/types.parse_start_jitter)
    # Unset (None): the profile's value, then the config's [job] value, or derived
    partition: str | None = None
    template: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time_limit: str | None = None
    split_pages: int | None = None  # None: derived from the plan; 0: never split
    worker_memory: str | None = None
    inference_server: str | None = None  # marker 2.x's per-task server; None or auto: the profile's, else native
    mps: str | None = None  # auto, on, off; None: the profile's, else the config's [job] one
    max_running: int | None = None  # at most this many tasks at once (Slurm's %K); None: no throttle
    max_output_mb_per_page: float | None = None  # output flagged oversize past it (quality/); None: the config's
    run_id: str | None = None
    force: bool = False  # convert PDFs whose outputs are already complete and up to date
    force_concurrent: bool = False  # start even while another run of this --out is active
    progress: bool = False  # a progress bar while scanning (the command line: on a terminal, or asked)
    llm: LlmRequest | None = None
    only: tuple[str, ...] | None = None  # convert just these PDFs (relative to pdfs); None: every PDF there
    parent: ParentRun | None = None  # a follow-up run (followup.py): the run it redoes documents of, and why

    @classmethod
    def with_defaults(cls, pdfs: Path, out: Path, **given: Any) -> SubmitRequest:
        """A request with the config's defaults for every option not in `given` (as `submit` does)."""
        defaults = load_config().submit_defaults()
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in defaults.items() if key in known}
        values.update(given)
        if "engine_options" not in given:
            values["engine_options"] = EngineOptions(
                paginate=bool(defaults["paginate"]),
                output_format=str(defaults["output_format"]),
                images=bool(defaults["images"]),
            )
        if isinstance(values["workers_per_gpu"], str):  # "auto", as the config writes it
            try:
                values["workers_per_gpu"] = parse_workers_per_gpu(values["workers_per_gpu"])
            except ValueError as exc:
                raise LaunchError(f"--workers-per-gpu {exc}") from None
        return cls(pdfs=Path(pdfs), out=Path(out), **values)

    @classmethod
    def from_options(cls, values: dict[str, Any]) -> SubmitRequest:
        """The request of `hpcmarker submit`'s values (by parameter name: config/options.py says which field each
        fills; --llm-option's already a dict when --llm is given); LaunchError for what the options refuse together."""
        parts = by_field(values)
        llm = None
        if parts["llm"]["model"]:
            llm = LlmRequest(**parts["llm"])
        elif parts["llm"]["options"] or parts["llm"]["ctx"] or parts["llm"]["server"]:
            raise LaunchError("--llm-server, --llm-ctx and --llm-option need --llm MODEL")
        engine = parts["engine_options"]
        engine.update(EngineOptions.ocr_fields(engine.get("force_ocr")))  # --force-ocr [auto|all]
        if engine["extra_config"] is None:
            engine["extra_config"] = {}
        else:
            try:
                engine["extra_config"] = EngineOptions.load_extra_config(engine["extra_config"])
            except ValueError as exc:
                raise LaunchError(f"--marker-config {exc}") from None
        return cls(**parts[""], engine_options=EngineOptions(**engine), llm=llm)


def resolve_profile(request: SubmitRequest) -> tuple[dict, JobSettings]:
    """(effective partition/template/cpus/mem/time and inference keys, job settings for the templates)."""
    explicit = {
        "partition": request.partition,
        "template": request.template,
        "cpus_per_task": request.cpus_per_task,
        "mem": request.mem,
        "time": request.time_limit,
    }
    return profile_settings(request.profile, explicit, request.mps, request.llm)


def profile_settings(
    name: str, explicit: dict[str, Any], mps: str | None = None, llm: LlmRequest | None = None
) -> tuple[dict, JobSettings]:
    """Profile `name` with the `explicit` values (partition, template, cpus_per_task, mem, time; None: the
    profile's), `mps` and `llm` over it: (effective values, inference keys, MPS and the LLM request; job
    settings for the templates)."""
    config = load_config()
    try:
        profile = config.profile(name)
    except ConfigError as exc:
        raise LaunchError(f"--profile {exc}") from None
    clash = sorted(set(profile.get("vars", {})) & RESERVED_VARIABLES)
    if clash:
        raise LaunchError(f"profile {name!r}: vars {', '.join(clash)} shadow built-in template variables")
    job = dict(config.job_defaults(), **profile)  # the profile's keys, else the config's [job] ones
    chosen: dict[str, Any] = {key: value if value is not None else job.get(key) for key, value in explicit.items()}
    settings = JobSettings(
        gres=job.get("gres"),
        account=profile.get("account"),
        qos=profile.get("qos"),
        constraint=profile.get("constraint"),
        setup=tuple(profile.get("setup", [])),
        llm_gres_type=profile.get("llm_gres_type"),
        vars=dict(profile.get("vars", {})),
        preemptible=bool(profile.get("preemptible", False)),
    )
    chosen["inference"] = {key: value for key, value in profile.items() if key.startswith("inference_")}
    chosen["mps"] = mps or job.get("mps") or "off"
    if llm is not None:
        chosen["llm"] = resolve_llm(llm, job)
    return chosen, settings


def resolve_llm(llm: LlmRequest, job: dict) -> LlmRequest:
    """The LLM request with the profile's server, image and `vllm serve` arguments; checked (LaunchError)."""
    from hpc_marker.llm.settings import SERVERS

    server = llm.server or job.get("llm_server") or "ollama"
    if server not in SERVERS:
        raise LaunchError(f"--llm-server {server!r}: choose from {', '.join(SERVERS)}")
    args = job.get("llm_args") or []
    args = shlex.split(args) if isinstance(args, str) else [str(arg) for arg in args]
    image = job.get("llm_image")
    if server == "vllm" and image and "://" not in image and not Path(image).is_file():
        raise LaunchError(f"llm_image {image}: no such file (the profile's Apptainer image with vllm)")
    check_bounds(
        llm_replicas=llm.replicas,
        llm_gpus=llm.gpus,
        llm_parallel=llm.parallel,
        llm_cpus=llm.cpus,
        llm_ctx=llm.ctx,
        llm_wait=llm.wait_timeout_s,
    )
    return replace(
        llm, server=server, image=image if server == "vllm" else None, server_args=args if server == "vllm" else []
    )


def check_bounds(**values: Any) -> None:
    """LaunchError for the first value (by option name) out of its option's bounds, through the option's click
    type (config/options.check_values): the command line refuses the same earlier. None values are unset."""
    problem = check_values(**values)
    if problem:
        raise LaunchError(problem)


def check_request(request: SubmitRequest, chosen: dict) -> None:
    """The request's own values and the profile's time and memory (no files, no cluster): LaunchError with a
    one-line reason."""
    if request.workers_per_gpu < 0:
        raise LaunchError(f"--workers-per-gpu {request.workers_per_gpu}: must be at least 1 (or auto)")
    check_bounds(
        gpus=request.gpus,
        scan_workers=request.scan_workers,
        max_running=request.max_running,
        split_pages=request.split_pages,
        lease_seconds=request.lease_seconds,
        min_task_pages=request.min_task_pages,
        max_rounds=request.max_rounds,
        start_jitter=request.start_jitter,
        cpus_per_task=chosen["cpus_per_task"],
        time_limit=chosen["time"],
        mem=chosen["mem"],
        inference_startup_timeout=request.inference_startup_timeout,
        max_output_mb_per_page=request.max_output_mb_per_page,
    )
    try:
        check_item_limits(request.item_timeout, request.worker_memory, request.engine)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    if request.permissions not in PERMISSIONS:
        raise LaunchError(f"--permissions {request.permissions!r}: choose from {', '.join(PERMISSIONS)}")
    if request.plan_strategy not in STRATEGIES:
        raise LaunchError(f"--plan-strategy {request.plan_strategy!r}: choose from {', '.join(STRATEGIES)}")
    if request.run_id is not None and not RUN_ID_PATTERN.match(request.run_id):
        raise LaunchError(f"--run-id {request.run_id!r}: use letters, digits, '.', '_' and '-'")


def check_out_dir(out: Path, umask: int) -> None:
    """`out` exists (created if need be) and takes a file."""
    try:
        with file_mode_mask(umask):
            out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".hpcmarker-write-test-"):
            pass
    except OSError as exc:
        raise LaunchError(f"--out {out}: cannot write there ({exc.strerror})") from None
