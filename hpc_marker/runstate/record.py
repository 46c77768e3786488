"""The run record (run.json): everything about a run that later commands need, and new run ids.

run.json is written and read in one place each (RunRecord.to_json, RunRecord.from_json). Its parts are typed:
engine options (engines/base.EngineOptions), the LLM service (llm/settings.LlmRecord), marker 2.x's per-task
inference server (servers/vllm.InferenceSettings), the output flags' thresholds (quality/flags.Thresholds), the
profile's job settings and a follow-up's parent run (JobSettings, ParentRun: here).

Versions: 1, the records written before run.json carried a version (no `version` key; a record may lack a
field added later, which then takes its default); 2, the same shape with `"version": 2` first. A record
of a later version than this hpcmarker knows is refused (ValueError), as is one with keys it does not know.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hpc_marker.engines.base import EngineOptions
from hpc_marker.llm.settings import LlmRecord
from hpc_marker.quality.flags import Thresholds
from hpc_marker.servers.vllm import InferenceSettings

RECORD_VERSION = 2  # of run.json; records without one are version 1


@dataclass(frozen=True)
class JobSettings:
    """From the run's profile, for the job templates: what a job asks the scheduler for besides its size."""

    gres: str | None = None  # per task, e.g. gpu:a100:1
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()  # shell lines run before the job: module loads, environment activation
    llm_gres_type: str | None = None  # the GRES type of the LLM service's GPUs
    vars: dict[str, Any] = field(default_factory=dict)  # more template variables
    preemptible: bool = False  # the partition preempts its jobs: a preempted task waits for Slurm's requeue

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSettings:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**dict(known, setup=tuple(known.get("setup") or ()), vars=dict(known.get("vars") or {})))

    def to_json(self) -> dict[str, Any]:
        return dict(asdict(self), setup=list(self.setup))


@dataclass(frozen=True)
class ParentRun:
    """What a follow-up run (`retry RUN --select ...`) redoes: the run, the selection, how many documents."""

    run_id: str
    select: str  # the selectors, comma-separated
    min_share: float
    documents: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParentRun:
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Round:
    """One round of the run's conversion arrays: its tasks, who submitted it (`submit`, `resume`, or the collector
    continuing the run), and, once its collector ran, how many items had a final status then and why it ended
    (`finished`, or the causes of its stopped tasks), and the tasks `grow` added to it."""

    number: int  # 1 for the first submission
    submitted: float
    tasks: tuple[int, ...]
    by: str = "submit"  # submit, resume, retry, continue
    done_items: int | None = None  # items with a final status when the round was collected
    ended: str = ""  # finished, or the causes that stopped it ("time limit, preempted"); "" while it runs
    note: str = ""  # why the run did not continue after it (--max-rounds reached, no progress, an incurable cause)
    grown: tuple[int, ...] = ()  # tasks `hpcmarker grow` added to the round (no share of their own: they steal)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Round:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**dict(known, tasks=tuple(known.get("tasks") or ()), grown=tuple(known.get("grown") or ())))

    def to_json(self) -> dict[str, Any]:
        return dict(asdict(self), tasks=list(self.tasks), grown=list(self.grown))


@dataclass
class RunRecord:
    """Everything about a run that later commands need, stored as run.json. Only `jobs`, `submitted`,
    `cancelled` and `rounds` change after the run is prepared (and the settings `resume` overrides, through a copy)."""

    run_id: str
    created: float
    pdfs_root: str
    out_dir: str
    engine: str
    engine_options: EngineOptions
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
    llm: LlmRecord | None = None  # the LLM service: model, gpus, parallel, ctx, options, timeouts
    inference: InferenceSettings | None = None  # marker 2.x's per-task server; None: not marker
    quality: Thresholds | None = None  # the output flags' thresholds fixed at submission; None: the config's
    mps: str | None = None  # NVIDIA MPS for the workers: auto, on, off (runtime/mps.py); None: off (older runs)
    job_settings: JobSettings = field(default_factory=JobSettings)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # role -> job ids
    submitted: float | None = None
    cancelled: float | None = None
    parent: ParentRun | None = None  # of a follow-up run: the run it redoes documents of
    bisect: bool = True  # a failing item of several pages is cut in halves (planning/bisect.py); older runs lack it
    max_rounds: int = 1  # rounds of arrays the run may submit itself (--max-rounds); older runs: 1, no continuation
    start_jitter: str = "0"  # auto or seconds (--start-jitter; config/types.parse_start_jitter); older runs: none
    rounds: list[Round] = field(default_factory=list)  # the rounds so far (older runs: none recorded, one ran)

    def to_json(self) -> dict[str, Any]:
        """run.json's content: the version, then every field (the typed parts as plain JSON)."""
        data: dict[str, Any] = {"version": RECORD_VERSION}
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            data[name] = value.to_json() if hasattr(value, "to_json") else value
        data["rounds"] = [r.to_json() for r in self.rounds]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """A record of any version up to RECORD_VERSION. ValueError for a later version or a key it does not
        know; TypeError when a field without a default is missing."""
        values = dict(data)
        version = values.pop("version", 1)
        if not isinstance(version, int) or not 1 <= version <= RECORD_VERSION:
            raise ValueError(f"run.json version {version!r}: this hpcmarker reads versions 1 to {RECORD_VERSION}")
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"run.json: unknown keys {', '.join(unknown)} (written by a later hpcmarker?)")
        if "engine_options" in values:
            values["engine_options"] = EngineOptions.from_json(values["engine_options"])
        if values.get("llm") is not None:
            values["llm"] = LlmRecord.from_json(values["llm"])
        if values.get("inference") is not None:
            values["inference"] = InferenceSettings.from_json(values["inference"])
        values["job_settings"] = JobSettings.from_json(values.get("job_settings") or {})
        if values.get("quality") is not None:
            values["quality"] = Thresholds.from_mapping(values["quality"])
        if values.get("parent") is not None:
            values["parent"] = ParentRun.from_json(values["parent"])
        values["rounds"] = [Round.from_json(r) for r in values.get("rounds") or ()]
        return cls(**values)


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"
