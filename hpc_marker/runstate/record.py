"""The run record (run.json): everything about a run that later commands need, and new run ids."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunRecord:
    """Everything about a run that later commands need, stored as run.json."""

    run_id: str
    created: float
    pdfs_root: str
    out_dir: str
    engine: str
    engine_options: dict[str, Any]
    executor: str  # "slurm" or "local"
    tasks: int
    gpus: int
    workers_per_gpu: int
    cpus_per_task: int
    template: str
    time_limit: str
    steal: bool  # tasks take over other tasks' unfinished items
    lease_seconds: float  # a claim not renewed for this long is taken over
    item_timeout: str  # runtime/limits.parse_item_timeout: auto, off, SECONDS or SECONDS/page
    umask: int  # files of the run and its outputs: private unless --permissions says otherwise
    profile: str
    partition: str | None = None
    mem: str | None = None
    split_pages: int | None = None  # None: derived from the plan; 0: never split
    worker_memory: str | None = None  # address-space cap per worker (CPU engines), e.g. "8G"
    max_running: int | None = None  # at most this many tasks at once (--max-running; resume keeps it)
    items: int = 0  # work items in the plan (the collector's memory is sized from it)
    llm: dict[str, Any] | None = None  # the LLM service: model, gpus, parallel, ctx, options, timeouts
    inference: dict[str, Any] | None = None  # marker 2.x's per-task server (runtime/inference.InferenceSettings)
    quality: dict[str, Any] | None = None  # the output flags' thresholds (quality/flags.Thresholds); None: config's
    mps: str | None = None  # NVIDIA MPS for the workers: auto, on, off (runtime/mps.py); None: off (older runs)
    # From the profile, for the templates: gres, account, qos, constraint, setup lines, llm_gres_type, vars.
    job_settings: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # role -> job ids
    submitted: float | None = None
    cancelled: float | None = None
    # A follow-up run (`retry RUN --select ...`): {"run_id", "select", "min_share", "documents"} of the run it redoes
    parent: dict[str, Any] | None = None
    bisect: bool = (
        True  # a failing item of several pages is cut in halves (planning/bisect.py); run.json of older runs lacks it
    )


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"
