"""The option schema: each option of `hpcmarker submit` (and those `resume` and `retry` share) declared once.

An `Option` says its flag, click type (config/types.py: the bounds are the type's), help and --help group, its
config key in [submit] (its default is defaults.toml's: the one source of defaults) and the `SubmitRequest` field it
fills (`llm.gpus`: a field of its LlmRequest, `engine_options.paginate`: of its EngineOptions) and the RunRecord
field it ends in (submission/launch.run_record writes it); where it has no key, no default or no field, `why` says
why. `Use`s put an option on `resume` or `retry` with the help it has there.
From this table: the click options of the three commands (cli/submitopts.py), the [submit] keys the config accepts
(SUBMIT_KEYS), the request's values (`by_field`) and the bound checks of library callers (`check_values`).
Tests (tests/config/test_options.py) check it against SubmitRequest, defaults.toml and the commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from hpc_marker.config.types import (
    BYTES,
    COUNT,
    ITEM_TIMEOUT,
    LEASE,
    MEMORY,
    OCR,
    PAGES,
    SECONDS,
    START_JITTER,
    TIME,
    WORKERS,
    BadValue,
    Number,
)
from hpc_marker.engines import ENGINE_NAMES
from hpc_marker.engines.formats import OUTPUT_FORMATS
from hpc_marker.llm.settings import CHECKS, SERVERS
from hpc_marker.runstate.permissions import PERMISSIONS

# The groups of submit's --help, in order (each command names its headings for them: cli/submitopts.py).
GROUPS = ("input_output", "resources", "engine", "llm", "scheduling", "advanced")
STRATEGIES = ("pages", "static")  # static: marker's chunk_convert sharding (no split, no stealing), for comparison
# Choices whose owners sit above config (tests/config/test_options.py checks them against executors.NAMES,
# runtime/inference.CHOICES and runtime/mps.MODES).
EXECUTORS = ("auto", "slurm", "local")  # auto: slurm where sbatch is on PATH
INFERENCE_SERVERS = ("auto", "off", "native", "apptainer", "singularity")
MPS_MODES = ("auto", "on", "off")
PATH = click.Path(path_type=Path)


@dataclass(frozen=True)
class Use:
    """The option on other commands (`resume`, `retry`, `grow`), with the help it has there; None values keep the
    run's."""

    commands: tuple[str, ...]
    help: str
    group: str = "resources"  # resume: the resubmitted tasks' resources; retry also "follow_up" (with --select)
    flag: str = ""  # where it differs from submit's (retry's --force-ocr/--no-force-ocr)


@dataclass(frozen=True)
class Option:
    """One option of `hpcmarker submit`."""

    name: str  # the click parameter's name
    flag: str  # "--time"; a pair: "--steal/--no-steal"
    group: str  # one of GROUPS
    help: str
    type: click.ParamType | None = None
    metavar: str | None = None
    config: str | None = ""  # its [submit] key ("": the name); None: not in the config (why says why)
    field: str | None = ""  # its SubmitRequest field ("": the name; "llm.x", "engine_options.x"); None: none
    record: str | None = ""  # the RunRecord field it ends in ("": its request field's first part); None: none
    why: str = ""  # why it has no config key, no default in defaults.toml, no field or no record field
    is_flag: bool = False
    flag_value: str | None = None  # an option whose value may be left out: this is the value then (--force-ocr)
    multiple: bool = False
    required: bool = False
    show_default: bool = False
    also: tuple[Use, ...] = ()

    @property
    def config_key(self) -> str | None:
        return self.name if self.config == "" else self.config

    @property
    def request_field(self) -> str | None:
        return self.name if self.field == "" else self.field

    @property
    def record_field(self) -> str | None:
        if self.record != "" or self.request_field is None:
            return self.record or None
        return self.request_field.split(".")[0]

    def use(self, command: str) -> Use | None:
        """How the option reads on `command` (submit: its own), or None where `command` does not take it."""
        if command == "submit":
            return Use(("submit",), self.help, self.group, self.flag)
        return next((use for use in self.also if command in use.commands), None)


RESUMED = ("resume", "retry")
GROWN = ("grow",)  # `hpcmarker grow`: the new tasks' resources
UNSET = "unset by default: "

OPTIONS: tuple[Option, ...] = (
    Option("pdfs", "--pdfs", "input_output", "Folder to scan for PDFs (recursively).", PATH, required=True,
           config=None, why="each run names its PDFs",
           record="pdfs_root"),
    Option("out", "--out", "input_output", "Folder for the Markdown (and the run folder).", PATH, required=True,
           config=None, why="each run names its output folder",
           record="out_dir"),
    Option("gpus", "--gpus", "resources", "GPUs = array tasks (at most one per work item).", COUNT,
           show_default=True, also=(Use(RESUMED, "At most this many tasks at once (those with the most work left; "
                                    "the others' items are taken by stealing)."),
                                Use(GROWN, "Tasks to add, a GPU each (required); they take their items by "
                                    "stealing from the run's tasks."))),
    Option("profile", "--profile", "resources",
           "Partition profile from the config (template, partition, GRES, account, setup lines...).",
           show_default=True, also=(Use(RESUMED, "Partition profile for the resubmitted tasks (its partition, GRES, "
                                    "account, setup lines...; the other options here win over it)."),
                                Use(GROWN, "Partition profile for the new tasks (default: the run's settings; "
                                    "the other options here win over it)."))),
    Option("partition", "--partition", "resources",
           "Slurm partition (default: the profile's, else the cluster's default).", why=UNSET + "the profile's",
           also=(Use(RESUMED, "Slurm partition for the resubmitted tasks."),
                 Use(GROWN, "Slurm partition for the new tasks (any: several may serve one run)."))),
    Option("template", "--template", "resources",
           "sbatch template (default: the profile's; see `hpcmarker templates list`).", why=UNSET + "the profile's"),
    Option("engine", "--engine", "engine", "marker; text (the text layer, no models); benchmark (a benchmark tool: "
           "text output at a fixed cost per page, HPCMARKER_BENCH_SECONDS_PER_PAGE).", click.Choice(ENGINE_NAMES),
           show_default=True, also=(Use(("retry",), "With --select: the follow-up run's engine.", "follow_up"),)),
    Option("workers_per_gpu", "--workers-per-gpu", "engine",
           "Worker processes per task; auto: from the GPU's memory, the task's CPUs and the engine.", WORKERS,
           metavar="auto|N", show_default=True),
    Option("cpus_per_task", "--cpus-per-task", "resources",
           "CPUs each array task asks for (default: the profile's, else 4).", COUNT, why=UNSET + "the profile's",
           also=(Use(RESUMED, "CPUs per resubmitted task."), Use(GROWN, "CPUs per new task."))),
    Option("mem", "--mem", "resources",
           "Memory per task, as sbatch --mem takes it (e.g. 32G; default: the profile's).", MEMORY,
           why=UNSET + "the profile's", also=(Use(RESUMED, "Memory per resubmitted task, as sbatch --mem takes it."),
                                               Use(GROWN, "Memory per new task, as sbatch --mem takes it."))),
    Option("time_limit", "--time", "resources", "Time limit per task (default: the profile's, else 04:00:00).", TIME,
           config="time", why=UNSET + "the profile's",
           also=(Use(RESUMED, "Time limit of the resubmitted tasks (e.g. 08:00:00)."),
                 Use(GROWN, "Time limit of the new tasks (default: the run's)."))),
    Option("force_ocr", "--force-ocr", "engine", "OCR every page (marker); `--force-ocr auto`: only the documents "
           "whose text layer is missing or garbled, judged from a few pages at scan time; the others are read from "
           "their text layer (docs/user-guide.md).", OCR, flag_value="all",
           field="engine_options.force_ocr", config=None, why="a choice for some PDFs, not a default",
           also=(Use(("retry",), "With --select: OCR every page (marker).", "follow_up",
                     "--force-ocr/--no-force-ocr"),)),
    Option("marker_config", "--marker-config", "engine", "JSON file of extra marker settings.", PATH,
           field="engine_options.extra_config", config=None, why="a file of settings itself",
           also=(Use(("retry",), "With --select: JSON file of marker settings.", "follow_up"),)),
    Option("paginate", "--paginate/--no-paginate", "input_output", "Page separators in the Markdown.",
           show_default=True, field="engine_options.paginate",
           also=(Use(("retry",), "With --select: page separators.", "follow_up"),)),
    Option("output_format", "--output-format", "input_output", "marker's renderers: markdown (.md), json (.json: "
           "pages and blocks), html (.html), chunks (.json: flat blocks for RAG); the text engine writes markdown or "
           "json (a Page block per page).", click.Choice(OUTPUT_FORMATS), show_default=True,
           field="engine_options.output_format",
           also=(Use(("retry",), "With --select: the output format.", "follow_up"),)),
    Option("images", "--images/--no-images", "input_output",
           "Extract images (marker; beside Markdown and HTML, inside JSON and chunks).", show_default=True,
           field="engine_options.images",
           also=(Use(("retry",), "With --select: extract images (marker).", "follow_up"),)),
    Option("executor", "--executor", "resources", "auto: Slurm when sbatch is on PATH, else this machine.",
           click.Choice(EXECUTORS), show_default=True),
    Option("run_id", "--run-id", "input_output", "Name the run (default: a timestamp).", config=None,
           why="names one run",
           also=(Use(("retry",), "With --select: name the follow-up run (default: a timestamp).", "follow_up"),)),
    Option("split_pages", "--split-pages", "scheduling", "Split PDFs longer than this into page ranges "
           "(default: a quarter of total pages / GPUs, at least 16; 0: never split).", PAGES,
           why=UNSET + "derived from the plan"),
    Option("steal", "--steal/--no-steal", "scheduling",
           "Tasks that run out of work take over other tasks' unfinished items.", show_default=True),
    Option("bisect", "--bisect/--no-bisect", "engine", "A failing item of several pages is cut in halves, again and "
           "again, until its bad pages stand alone: the rest converts and the document is `partial`, with a "
           "placeholder for each lost page.", show_default=True),
    Option("lease_seconds", "--lease-seconds", "scheduling",
           "A claimed item whose task stops renewing its claim this long is taken over.", LEASE, show_default=True),
    Option("plan_strategy", "--plan-strategy", "scheduling", "static: marker's chunk_convert sharding (files in "
           "listing order, no split, no stealing), for comparison.", click.Choice(STRATEGIES), show_default=True,
           record=None, why="not recorded: the plan is (saved beside the record)"),
    Option("force", "--force", "input_output", "Also convert PDFs whose outputs are complete and up to date.",
           is_flag=True, config=None, why="redoes one run's outputs, not a default",
           record=None),
    Option("llm_model", "--llm", "llm", "Refine with this model (an Ollama name; for vLLM a Hugging Face id or a "
           "path), served by the run's LLM service (marker: --use_llm; text: each page rewritten as clean Markdown).",
           metavar="MODEL", field="llm.model", config=None, why="a run asks for an LLM by naming its model"),
    Option("llm_server", "--llm-server", "llm",
           "The LLM service's server (default: the profile's llm_server, else ollama).",
           click.Choice(SERVERS), field="llm.server", why=UNSET + "the profile's, then [job]'s"),
    Option("llm_replicas", "--llm-replicas", "llm", "LLM service jobs, each with --llm-gpus GPUs; tasks spread "
           "over them and move to a live one when theirs stops.", COUNT, show_default=True, field="llm.replicas"),
    Option("llm_gpus", "--llm-gpus", "llm", "GPUs per LLM service job (vLLM: tensor parallelism).", COUNT,
           show_default=True, field="llm.gpus"),
    Option("llm_cpus", "--llm-cpus", "llm", "CPUs per LLM service job.", COUNT, show_default=True, field="llm.cpus"),
    Option("llm_parallel", "--llm-parallel", "llm", "Generations per replica at once: OLLAMA_NUM_PARALLEL, vLLM's "
           "--max-num-seqs (choose with `hpcmarker llm bench`).", COUNT, show_default=True, field="llm.parallel"),
    Option("llm_ctx", "--llm-ctx", "llm", "Context size: num_ctx of a derived Ollama model (created once, reused); "
           "vLLM's --max-model-len.", COUNT, field="llm.ctx", config=None, why="each model has its own"),
    Option("llm_options", "--llm-option", "llm", "Ollama: a model parameter (temperature=0); vLLM: a `vllm serve` "
           "flag (enforce-eager=true, gpu-memory-utilization=0.9); repeatable.", metavar="KEY=VALUE", multiple=True,
           field="llm.options", config=None, why="each model has its own"),
    Option("llm_wait", "--llm-wait", "llm", "Seconds a task waits for the LLM service before failing.", SECONDS,
           show_default=True, field="llm.wait_timeout_s"),
    Option("llm_check", "--llm-check", "llm", "Before any task uses it, the LLM service sends one request as the "
           "engine does (marker: a JSON schema and an image; text: a chat); a server or model that cannot answer "
           "stops the run at once with what to change (auto: by engine).", click.Choice(("auto", *CHECKS)),
           show_default=True, field="llm.check"),
    Option("llm_bind", "--llm-bind", "llm",
           "Address of the service's authenticating front (default: the service node's hostname address).",
           metavar="HOST", field="llm.bind_host", config=None, why="an address of one run's service node"),
    Option("item_timeout", "--item-timeout", "engine", "Wall-clock limit per work item; past it only that item's "
           "worker is ended and the item is recorded `timeout` (auto: 300 s + 60 s/page; a worker's first item also "
           "gets the engine's model-loading allowance: marker 600 s, text 30 s).", ITEM_TIMEOUT,
           metavar="auto|off|SECONDS|[BASE+]SECONDS/page", show_default=True,
           also=(Use(RESUMED, "Wall-clock limit per work item from now on."),)),
    Option("worker_memory", "--worker-memory", "engine", "Address-space cap per worker (e.g. 8G) for CPU engines: "
           "an item that needs more fails alone (marker: use --mem).", BYTES, metavar="SIZE",
           why=UNSET + "no cap"),
    Option("max_output_mb_per_page", "--max-output-mb-per-page", "engine", "A document's output past this many MB "
           "of text per page is kept but flagged oversize (docs/quality.md).", Number(float, positive=True),
           metavar="MB", show_default=True, record="quality"),
    Option("permissions", "--permissions", "input_output",
           "Who may read the Markdown written (the run folder stays private).", click.Choice(list(PERMISSIONS)),
           show_default=True,
           record="umask"),
    Option("inference_server", "--inference-server", "engine", "marker 2.x's VLM server, one per task: native "
           "(`vllm serve` from the job's environment), apptainer (in the profile's inference_image), off "
           "(SURYA_INFERENCE_URL or surya's own); auto (default): the profile's inference_server, else native.",
           click.Choice(INFERENCE_SERVERS), why=UNSET + "the profile's",
           record="inference"),
    Option("inference_startup_timeout", "--inference-startup-timeout", "engine",
           "Seconds a task waits for its inference server to answer.", SECONDS, metavar="SECONDS",
           show_default=True,
           record="inference"),
    Option("start_jitter", "--start-jitter", "scheduling", "Each task waits a random delay below this many seconds "
           "(fixed per task) before it loads its engine and starts its servers, so that many tasks starting at once do "
           "not read the model weights in the same second. auto: 0.05 s per task, at most 60 s; 0: none.",
           START_JITTER, metavar="auto|SECONDS", show_default=True),
    Option("max_running", "--max-running", "scheduling", "At most K tasks of the run at once (Slurm's --array "
           "...%K; a run split into several arrays, past the cluster's MaxArraySize, shares K between them in "
           "proportion to their sizes). Default: no throttle.", COUNT, metavar="K", why=UNSET + "no throttle"),
    Option("scan_workers", "--scan-workers", "advanced",
           "Processes counting pages while scanning, each at nice 10 (at most one per core).", COUNT, metavar="N",
           show_default=True,
           record=None, why="not recorded: it only scans, on the login node"),
    Option("min_task_pages", "--min-task-pages", "scheduling", "Each task gets at least this many pages: --gpus "
           "beyond what the PDFs can use is reduced (with a note), so no task loads the models for a page or two.",
           COUNT, metavar="PAGES", show_default=True,
           record=None, why="not recorded: the plan is (saved beside the record)"),
    Option("max_rounds", "--max-rounds", "scheduling", "Rounds of arrays a Slurm run may submit itself: when a "
           "round's tasks stop at the time limit, are preempted or lose their node with work left, the collector "
           "submits the next round (docs/user-guide.md). 1 turns continuation off.", COUNT, metavar="N",
           show_default=True),
    Option("force_concurrent", "--force-concurrent", "scheduling",
           "Start even while another run of this --out is still active (both write into it).", is_flag=True,
           config=None, why="for one run that must overlap another",
           also=(Use(RESUMED, "Even while another run of its --out is active."),),
           record=None),
    Option("progress", "--progress/--no-progress", "advanced", "A progress bar with an ETA on stderr while scanning "
           "(default: when stderr is a terminal, except with --dry-run).", config=None,
           why="decided by the terminal (cli/run.py)",
           record=None),
    Option("mps", "--mps", "engine", "NVIDIA MPS for the workers sharing a task's GPU; auto (default: the profile's "
           "mps): marker 1.x with more than one worker, not where Slurm shares the GPU through gres/mps or MPS runs "
           "already.", click.Choice(MPS_MODES), why=UNSET + "the profile's, then [job]'s"),
    Option("dry_run", "--dry-run", "input_output", "Do everything but submit; print the sbatch scripts.",
           is_flag=True, config=None, field=None, why="what the command does, not what the run is",
           also=(Use(("retry",), "With --select: list the documents selected; submit nothing.", "follow_up"),)),
)  # fmt: skip
BY_NAME = {option.name: option for option in OPTIONS}
SUBMIT_KEYS = frozenset(key for option in OPTIONS if (key := option.config_key))
PARAMETER_NAMES = {option.config_key: option.name for option in OPTIONS if option.config_key not in (None, option.name)}


def options_of(command: str) -> list[tuple[Option, Use]]:
    """The options `command` takes, in the table's order, each with how it reads there."""
    return [(option, use) for option in OPTIONS if (use := option.use(command)) is not None]


def by_field(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Submit's values by parameter name -> the request's: {"": SubmitRequest fields, "llm": LlmRequest fields,
    "engine_options": EngineOptions fields}. Pure."""
    out: dict[str, dict[str, Any]] = {"": {}, "llm": {}, "engine_options": {}}
    for name, value in values.items():
        where = BY_NAME[name].request_field
        if where is not None:
            part, _, field = where.rpartition(".")
            out[part][field] = value
    return out


def check_values(**values: Any) -> str | None:
    """The first value out of its option's bounds, as the command line says it (`--gpus 0: must be at least 1`),
    through the option's click type; None when all are fine. None values are unset."""
    for name, value in values.items():
        option = BY_NAME[name]
        if value is None or option.type is None:
            continue
        try:
            option.type.convert(value, None, None)
        except BadValue as exc:
            return f"{option.flag.split('/')[0]} {exc.message}"
    return None
