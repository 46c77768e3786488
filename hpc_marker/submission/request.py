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
from hpc_marker.engines import EngineOptions
from hpc_marker.runstate.permissions import PERMISSIONS, file_mode_mask
from hpc_marker.runtime.limits import check_item_limits
from hpc_marker.slurm.parse import parse_memory_spec, parse_time_limit
from hpc_marker.util.errors import UserError

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STRATEGIES = ("pages", "static")  # static: marker's chunk_convert sharding (no split, no stealing), for comparison
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


# The least value of each numeric option (by its name on the command line); the click types of cli/types.py
# and the checks below read this one table, so submit, plan, resume, retry and library callers share it.
LEAST = {
    "gpus": 1,
    "cpus-per-task": 1,
    "scan-workers": 1,
    "max-running": 1,
    "min-task-pages": 1,
    "split-pages": 0,
    "llm-replicas": 1,
    "llm-gpus": 1,
    "llm-parallel": 1,
    "llm-cpus": 1,
    "llm-ctx": 1,
}
POSITIVE = {"lease-seconds", "llm-wait", "inference-startup-timeout", "max-output-mb-per-page"}  # more than 0
BEYOND_LEAST = {
    "split-pages": "must be 0 (never split) or a number of pages",
    "lease-seconds": "must be positive (a claim not renewed for this long is taken over)",
}


def bound_problem(option: str, value: float) -> str | None:
    """Why `value` is out of bounds for `option` (`0: must be at least 1`), or None. Pure."""
    shown = f"{value:g}" if isinstance(value, float) else value
    if option in LEAST and value < LEAST[option]:
        return f"{shown}: {BEYOND_LEAST.get(option, f'must be at least {LEAST[option]}')}"
    if option in POSITIVE and not value > 0:
        return f"{shown}: {BEYOND_LEAST.get(option, 'must be positive')}"
    return None


def memory_problem(text: str) -> str | None:
    """Why `text` is not a size sbatch --mem takes (`'lots': not a memory size ...`), or None. Pure."""
    if parse_memory_spec(str(text)) is None:
        return f"{text!r}: not a memory size (e.g. 32G, 500M, 1T; a plain number is megabytes)"
    return None


def time_problem(text: str) -> str | None:
    """Why `text` is not a Slurm time limit, or None. Pure."""
    if parse_time_limit(str(text)) is None:
        return f"{text!r}: use minutes, HH:MM:SS or D-HH:MM:SS"
    return None


class LaunchError(UserError):
    """Bad input or an unusable cluster setting: nothing was submitted."""


class NothingToDo(Exception):
    """Every PDF already has an up-to-date output (not an error: nothing to submit)."""


def parse_workers_per_gpu(value: Any) -> int:
    """`auto` -> 0 (each task chooses, runtime/sizing.py), else a count of at least 1."""
    text = str(value).strip().lower()
    if text == "auto":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise LaunchError(f"--workers-per-gpu {value!r}: use auto or a number of at least 1")
    return int(text)


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

    def record(self) -> dict:
        return {
            "model": self.model,
            "server": self.server or "ollama",
            "replicas": self.replicas,
            "gpus": self.gpus,
            "parallel": self.parallel,
            "ctx": self.ctx,
            "options": self.options,
            "wait_timeout_s": self.wait_timeout_s,
            "request_timeout_s": self.request_timeout_s,
            "concurrency": self.concurrency,
            "cpus": self.cpus,
            "mem": self.mem,
        }


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
    parent: dict | None = None  # a follow-up run (followup.py): the run it redoes documents of, and why

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
            values["workers_per_gpu"] = parse_workers_per_gpu(values["workers_per_gpu"])
        return cls(pdfs=Path(pdfs), out=Path(out), **values)


def resolve_profile(request: SubmitRequest) -> tuple[dict, dict]:
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
) -> tuple[dict, dict]:
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
    settings = {
        "gres": job.get("gres"),
        "account": profile.get("account"),
        "qos": profile.get("qos"),
        "constraint": profile.get("constraint"),
        "setup": list(profile.get("setup", [])),
        "llm_gres_type": profile.get("llm_gres_type"),
        "vars": dict(profile.get("vars", {})),
    }
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
    """LaunchError for the first value out of its option's bounds (LEAST, POSITIVE; `time_limit` and `mem` as
    sbatch takes them); None values are unset. The command line's types refuse the same earlier."""
    for name, value in values.items():
        if value is None:
            continue
        option = {"time_limit": "time"}.get(name, name).replace("_", "-")
        if option == "time":
            problem = time_problem(value)
        else:
            problem = memory_problem(value) if option == "mem" else bound_problem(option, value)
        if problem:
            raise LaunchError(f"--{option} {problem}")


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
