"""`hpcmarker submit` and `hpcmarker plan`: from a folder of PDFs to a run (or just its plan)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console

from hpc_marker.cli.group import InputError
from hpc_marker.cli.llm import parse_option
from hpc_marker.cli.sections import SectionedCommand
from hpc_marker.cli.types import (
    BYTES,
    COUNT,
    ITEM_TIMEOUT,
    MEMORY,
    SECONDS,
    TIME,
    WORKERS,
    Number,
)
from hpc_marker.engines import ENGINE_NAMES, EngineOptions
from hpc_marker.engines.formats import OUTPUT_FORMATS
from hpc_marker.executors import NAMES as EXECUTORS
from hpc_marker.runstate.permissions import PERMISSIONS
from hpc_marker.slurm.parse import base_id
from hpc_marker.submission.request import STRATEGIES
from hpc_marker.util.text import plural

SUBMIT_SECTIONS = {  # --help's headings and the options under each (cli/sections.py)
    "Input and output": (
        "pdfs",
        "out",
        "output_format",
        "images",
        "paginate",
        "force",
        "run_id",
        "permissions",
        "dry_run",
    ),
    "Resources": ("gpus", "profile", "partition", "template", "cpus_per_task", "mem", "time_limit", "executor"),
    "Engine": (
        "engine",
        "workers_per_gpu",
        "force_ocr",
        "marker_config",
        "item_timeout",
        "worker_memory",
        "max_output_mb_per_page",
        "bisect",
        "inference_server",
        "inference_startup_timeout",
        "mps",
    ),
    "LLM": (
        "llm_model",
        "llm_server",
        "llm_replicas",
        "llm_gpus",
        "llm_cpus",
        "llm_parallel",
        "llm_ctx",
        "llm_options",
        "llm_wait",
        "llm_bind",
    ),
    "Scheduling": (
        "max_running",
        "split_pages",
        "min_task_pages",
        "steal",
        "lease_seconds",
        "plan_strategy",
        "force_concurrent",
    ),
    "Advanced": ("scan_workers", "progress", "help"),
}
SUBMIT_EXAMPLES = (  # each line runs as printed (tests/cli/test_help.py runs them)
    "# every PDF under ~/pdfs on 8 GPUs of the cluster (Slurm), Markdown into ~/md:",
    "hpcmarker submit --pdfs ~/pdfs --out ~/md --gpus 8",
    "# here, without Slurm or a GPU: the PDFs' text layer, no models:",
    "hpcmarker submit --pdfs ~/pdfs --out ~/md --engine text --executor local",
    "# the sbatch scripts of a run of 12 hours and 64G a task; nothing is submitted:",
    "hpcmarker submit --pdfs ~/pdfs --out ~/md --time 12:00:00 --mem 64G --dry-run",
    "# JSON chunks for a RAG index, without images:",
    "hpcmarker submit --pdfs ~/pdfs --out ~/rag --output-format chunks --no-images",
)
WILL_FAIL_LINES = 20  # unreadable PDFs named one per line at submit; the rest are counted (all are in the manifest)


def engine_options(
    force_ocr: bool, marker_config: Path | None, paginate: bool, output_format: str, images: bool
) -> EngineOptions:
    extra = {}
    if marker_config is not None:
        try:
            extra = EngineOptions.load_extra_config(marker_config)
        except ValueError as exc:
            raise InputError(f"--marker-config {exc}") from None
    return EngineOptions(
        paginate=paginate, force_ocr=force_ocr, extra_config=extra, output_format=output_format, images=images
    )


@click.command(cls=SectionedCommand, sections=SUBMIT_SECTIONS, examples=SUBMIT_EXAMPLES)
@click.option("--pdfs", required=True, type=click.Path(path_type=Path), help="Folder to scan for PDFs (recursively).")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Folder for the Markdown (and the run folder)."
)
@click.option("--gpus", type=COUNT, show_default=True, help="GPUs = array tasks (at most one per work item).")
@click.option(
    "--profile",
    show_default=True,
    help="Partition profile from the config (template, partition, GRES, account, setup lines...).",
)
@click.option("--partition", help="Slurm partition (default: the profile's, else the cluster's default).")
@click.option("--template", help="sbatch template (default: the profile's; see `hpcmarker templates list`).")
@click.option(
    "--engine",
    type=click.Choice(ENGINE_NAMES),
    show_default=True,
    help="marker; text (the text layer, no models); benchmark (a benchmark tool: text output "
    "at a fixed cost per page, HPCMARKER_BENCH_SECONDS_PER_PAGE).",
)
@click.option(
    "--workers-per-gpu",
    show_default=True,
    metavar="auto|N",
    type=WORKERS,
    help="Worker processes per task; auto: from the GPU's memory, the task's CPUs and the engine.",
)
@click.option("--cpus-per-task", type=COUNT, help="CPUs each array task asks for (default: the profile's, else 4).")
@click.option(
    "--mem", type=MEMORY, help="Memory per task, as sbatch --mem takes it (e.g. 32G; default: the profile's)."
)
@click.option("--time", "time_limit", type=TIME, help="Time limit per task (default: the profile's, else 04:00:00).")
@click.option("--force-ocr", is_flag=True, help="OCR every page (marker).")
@click.option("--marker-config", type=click.Path(path_type=Path), help="JSON file of extra marker settings.")
@click.option("--paginate/--no-paginate", default=None, show_default=True, help="Page separators in the Markdown.")
@click.option(
    "--output-format",
    type=click.Choice(OUTPUT_FORMATS),
    show_default=True,
    help="marker's renderers: markdown (.md), json (.json: pages and blocks), html (.html), chunks "
    "(.json: flat blocks for RAG); the text engine writes markdown or json (a Page block per page).",
)
@click.option(
    "--images/--no-images",
    default=None,
    show_default=True,
    help="Extract images (marker; beside Markdown and HTML, inside JSON and chunks).",
)
@click.option(
    "--executor",
    type=click.Choice(["auto", *EXECUTORS]),
    show_default=True,
    help="auto: Slurm when sbatch is on PATH, else this machine.",
)
@click.option("--run-id", help="Name the run (default: a timestamp).")
@click.option(
    "--split-pages",
    type=COUNT,
    help="Split PDFs longer than this into page ranges "
    "(default: a quarter of total pages / GPUs, at least 16; 0: never split).",
)
@click.option(
    "--steal/--no-steal",
    default=None,
    show_default=True,
    help="Tasks that run out of work take over other tasks' unfinished items.",
)
@click.option(
    "--bisect/--no-bisect",
    default=None,
    show_default=True,
    help="A failing item of several pages is cut in halves, again and again, until its bad pages stand "
    "alone: the rest converts and the document is `partial`, with a placeholder for each lost page.",
)
@click.option(
    "--lease-seconds",
    show_default=True,
    type=SECONDS,
    help="A claimed item whose task stops renewing its claim this long is taken over.",
)
@click.option(
    "--plan-strategy",
    type=click.Choice(STRATEGIES),
    show_default=True,
    help="static: marker's chunk_convert sharding (files in listing order, no split, no stealing), for comparison.",
)
@click.option("--force", is_flag=True, help="Also convert PDFs whose outputs are complete and up to date.")
@click.option(
    "--llm",
    "llm_model",
    metavar="MODEL",
    help="Refine with this model (an Ollama name; for vLLM a Hugging "
    "Face id or a path), served by the run's LLM service (marker: --use_llm; text: each page rewritten as "
    "clean Markdown).",
)
@click.option(
    "--llm-server",
    type=click.Choice(["ollama", "vllm"]),
    help="The LLM service's server (default: the profile's llm_server, else ollama).",
)
@click.option(
    "--llm-replicas",
    show_default=True,
    type=COUNT,
    help="LLM service jobs, each with --llm-gpus GPUs; tasks spread over them and move to a live one "
    "when theirs stops.",
)
@click.option("--llm-gpus", show_default=True, type=COUNT, help="GPUs per LLM service job (vLLM: tensor parallelism).")
@click.option("--llm-cpus", show_default=True, type=COUNT, help="CPUs per LLM service job.")
@click.option(
    "--llm-parallel",
    show_default=True,
    type=COUNT,
    help="Generations per replica at once: OLLAMA_NUM_PARALLEL, vLLM's --max-num-seqs "
    "(choose with `hpcmarker llm bench`).",
)
@click.option(
    "--llm-ctx",
    type=COUNT,
    help="Context size: num_ctx of a derived Ollama model (created once, reused); vLLM's --max-model-len.",
)
@click.option(
    "--llm-option",
    "llm_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Ollama: a model parameter (temperature=0); vLLM: a `vllm serve` flag (enforce-eager=true, "
    "gpu-memory-utilization=0.9); repeatable.",
)
@click.option(
    "--llm-wait", show_default=True, type=SECONDS, help="Seconds a task waits for the LLM service before failing."
)
@click.option(
    "--llm-bind",
    metavar="HOST",
    help="Address of the service's authenticating front (default: the service node's hostname address).",
)
@click.option(
    "--item-timeout",
    show_default=True,
    type=ITEM_TIMEOUT,
    metavar="auto|off|SECONDS|[BASE+]SECONDS/page",
    help="Wall-clock limit per work item; past it only that item's worker is ended and the item is "
    "recorded `timeout` (auto: 300 s + 60 s/page; a worker's first item also gets the engine's "
    "model-loading allowance: marker 600 s, text 30 s).",
)
@click.option(
    "--worker-memory",
    type=BYTES,
    metavar="SIZE",
    help="Address-space cap per worker (e.g. 8G) for CPU engines: "
    "an item that needs more fails alone (marker: use --mem).",
)
@click.option(
    "--permissions",
    type=click.Choice(list(PERMISSIONS)),
    show_default=True,
    help="Who may read the Markdown written (the run folder stays private).",
)
@click.option(
    "--inference-server",
    type=click.Choice(["auto", "off", "native", "apptainer", "singularity"]),
    help="marker 2.x's VLM server, one per task: native (`vllm serve` from the job's environment), "
    "apptainer (in the profile's inference_image), off (SURYA_INFERENCE_URL or surya's own); "
    "auto (default): the profile's inference_server, else native.",
)
@click.option(
    "--inference-startup-timeout",
    type=SECONDS,
    metavar="SECONDS",
    show_default=True,
    help="Seconds a task waits for its inference server to answer.",
)
@click.option(
    "--max-running",
    type=COUNT,
    metavar="K",
    help="At most K tasks of the run at once (Slurm's --array "
    "...%K; a run split into several arrays, past the cluster's MaxArraySize, shares K between them in "
    "proportion to their sizes). Default: no throttle.",
)
@click.option(
    "--scan-workers",
    type=COUNT,
    metavar="N",
    show_default=True,
    help="Processes counting pages while scanning, each at nice 10 (at most one per core).",
)
@click.option(
    "--min-task-pages",
    type=COUNT,
    metavar="PAGES",
    show_default=True,
    help="Each task gets at least this many pages: --gpus beyond what the PDFs can use is reduced "
    "(with a note), so no task loads the models for a page or two.",
)
@click.option(
    "--max-output-mb-per-page",
    type=Number(float),
    metavar="MB",
    show_default=True,
    help="A document's output past this many MB of text per page is kept but flagged oversize (docs/quality.md).",
)
@click.option(
    "--force-concurrent",
    is_flag=True,
    help="Start even while another run of this --out is still active (both write into it).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar with an ETA on stderr while scanning (default: when stderr is a terminal, "
    "except with --dry-run).",
)
@click.option(
    "--mps",
    type=click.Choice(["auto", "on", "off"]),
    help="NVIDIA MPS for the workers sharing a task's GPU; auto (default: the profile's mps): marker 1.x "
    "with more than one worker, not where Slurm shares the GPU through gres/mps or MPS runs already.",
)
@click.option("--dry-run", is_flag=True, help="Do everything but submit; print the sbatch scripts.")
def submit(
    pdfs,
    out,
    gpus,
    profile,
    partition,
    template,
    engine,
    workers_per_gpu,
    cpus_per_task,
    mem,
    time_limit,
    force_ocr,
    marker_config,
    paginate,
    output_format,
    images,
    executor,
    run_id,
    split_pages,
    steal,
    bisect,
    lease_seconds,
    plan_strategy,
    force,
    llm_model,
    llm_server,
    llm_replicas,
    llm_gpus,
    llm_cpus,
    llm_parallel,
    llm_ctx,
    llm_options,
    llm_wait,
    llm_bind,
    item_timeout,
    worker_memory,
    permissions,
    inference_server,
    inference_startup_timeout,
    max_running,
    scan_workers,
    min_task_pages,
    max_output_mb_per_page,
    force_concurrent,
    progress,
    mps,
    dry_run,
) -> None:
    """Scan PDFS, plan, and submit the conversion array and its collector.

    With Slurm (sbatch on PATH) this queues the jobs and returns; `hpcmarker status` follows them. Without it
    (or with --executor local) the run happens here and `submit` waits for it: it then ends with the run's
    state, why it is incomplete if it is, the next command, and the exit code `status` gives (0 finished,
    3 finished with failed items or lost pages, 4 incomplete, 130 interrupted)."""
    from hpc_marker.submission.launch import prepare_run, submit_run
    from hpc_marker.submission.request import LlmRequest, NothingToDo, SubmitRequest
    from hpc_marker.submission.scripts import dry_run_text

    llm = None
    if llm_model:
        parsed = dict(parse_option(text) for text in llm_options)
        llm = LlmRequest(
            model=llm_model,
            gpus=llm_gpus,
            parallel=llm_parallel,
            cpus=llm_cpus,
            replicas=llm_replicas,
            server=llm_server,
            ctx=llm_ctx,
            options=parsed,
            wait_timeout_s=llm_wait,
            bind_host=llm_bind,
        )
    elif llm_options or llm_ctx or llm_server:
        raise InputError("--llm-server, --llm-ctx and --llm-option need --llm MODEL")
    request = SubmitRequest(
        pdfs=pdfs,
        out=out,
        gpus=gpus,
        engine=engine,
        engine_options=engine_options(force_ocr, marker_config, paginate, output_format, images),
        profile=profile,
        partition=partition,
        template=template,
        workers_per_gpu=workers_per_gpu,
        cpus_per_task=cpus_per_task,
        mem=mem,
        time_limit=time_limit,
        executor=executor,
        run_id=run_id,
        split_pages=split_pages,
        steal=steal,
        bisect=bisect,
        lease_seconds=lease_seconds,
        plan_strategy=plan_strategy,
        force=force,
        llm=llm,
        item_timeout=item_timeout,
        worker_memory=worker_memory,
        permissions=permissions,
        inference_server=inference_server,
        inference_startup_timeout=inference_startup_timeout,
        max_running=max_running,
        scan_workers=scan_workers,
        min_task_pages=min_task_pages,
        max_output_mb_per_page=max_output_mb_per_page,
        force_concurrent=force_concurrent,
        progress=_show_progress(progress, machine=dry_run),
        mps=mps,
    )
    try:
        prepared = prepare_run(request, create=not dry_run)
    except NothingToDo as exc:
        click.echo(str(exc))
        return
    if dry_run:
        for note in prepared.notes:
            click.echo(note, err=True)
        click.echo(dry_run_text(prepared.scripts, (prepared.record.llm or {}).get("replicas", 1)), nl=False)
        return
    with discarded_unless_submitted(prepared):
        if prepared.up_to_date:
            click.echo(
                f"skipping {plural(len(prepared.up_to_date), 'PDF')} whose outputs are up to date (--force redoes them)"
            )
        submit_prepared(prepared, lambda: submit_run(prepared, progress=ProgressPrinter()))


@contextmanager
def discarded_unless_submitted(prepared) -> Iterator[None]:
    """The run folder `prepare_run` made goes again (with its entry in the user's runs and its hold on
    --out) when the command dies before the run's jobs are recorded: the scheduler refused it, Ctrl-C, or
    its stdout a closed pipe (a printed command pasted with a `|` in it). Nothing is left to resume."""
    from hpc_marker.runstate.index import ran
    from hpc_marker.submission.launch import discard_run

    try:
        yield
    except BaseException:
        if not ran(prepared.paths):
            discard_run(prepared.paths, prepared.record)
        raise


def submit_prepared(prepared, submit: Callable) -> None:
    """Say what a prepared run holds, call `submit` (which sends it), then say what became of it:
    its jobs, or for a run that waits (local), its result."""
    from hpc_marker.executors import executor_for
    from hpc_marker.executors.local import LocalRunFailed

    plan, record = prepared.plan, prepared.record
    executor_used = executor_for(record.executor)
    click.echo(
        f"run {record.run_id}: {plural(len(prepared.scanned), 'PDF')} ({plural(len(plan.items), 'work item')}), "
        f"{plural(plan.total_pages, 'page')}, {plural(record.tasks, 'task')} ({record.executor}); "
        f"run folder {prepared.paths.root}"
    )
    unreadable = [pdf for pdf in prepared.scanned if pdf.error]
    for pdf in unreadable[:WILL_FAIL_LINES]:
        click.echo(f"  will fail: {pdf.relpath}: {pdf.error}", err=True)
    if len(unreadable) > WILL_FAIL_LINES:
        click.echo(
            f"  ... and {plural(len(unreadable) - WILL_FAIL_LINES, 'more PDF')} that will fail (each is in the "
            f"manifest with its reason: hpcmarker status {record.run_id})",
            err=True,
        )
    for note in prepared.notes:
        click.echo(note, err=True)
    try:
        record = submit()
    except KeyboardInterrupt:  # the tasks were stopped (they gave their claims back): the run is incomplete
        from hpc_marker.manage.cancel import mark_cancelled

        mark_cancelled(prepared.paths)
        click.echo(f"run {record.run_id}: interrupted (Ctrl-C)", err=True)
        tell_verdict(prepared.paths, exit_code=130)
    except LocalRunFailed as exc:  # the collector could not finish: the verdict says what is left
        click.echo(f"run {record.run_id}: {exc}", err=True)
        tell_verdict(prepared.paths)
    if not executor_used.waits:
        arrays = list(dict.fromkeys(base_id(job_id) for job_id in record.jobs["convert"]))  # in submission order
        sizes = " + ".join(f"{len(array.tasks):,}" for array in prepared.layout.arrays)
        click.echo(
            f"submitted: {'array' if len(arrays) == 1 else 'arrays'} {', '.join(arrays)} "
            f"({plural(record.tasks, 'task')}{f': {sizes}' if len(arrays) > 1 else ''}), "
            f"collector {record.jobs['collect'][0]}"
        )
        click.echo(f"follow it with: hpcmarker status {record.run_id}")
        return
    tell_verdict(prepared.paths)


FORMAT_NAMES = {"markdown": "Markdown", "json": "JSON", "html": "HTML", "chunks": "chunks (JSON)"}


def tell_verdict(paths, exit_code: int | None = None) -> None:
    """The end of a run this command waited for: its state and counts, each failed item and lost page, one
    line per cause of what is left, the flagged text layer, the next command; then exit with `status`'s
    code (or `exit_code`)."""
    from hpc_marker.manage.status import load_status
    from hpc_marker.util.commands import ocr_command

    status = load_status(paths)
    record = paths.load_record()
    kinds, layer = "", {}
    if paths.summary.exists():
        summary = json.loads(paths.summary.read_text())
        kinds = ", ".join(
            f"{n} {kind}"
            for kind, n in summary.get("by_status", {}).items()
            if n and kind not in ("ok", "failed", "partial")
        )
        for failure in summary["failures"]:
            click.echo(f"  {failure.get('status', 'failed')}: {failure['pdf']}: {failure['error']}", err=True)
        for page in summary.get("lost_pages", []):
            click.echo(f"  lost page {page['page']} of {page['pdf']}: {page['status']}: {page['error']}", err=True)
        layer = summary.get("text_layer") or {}
    output_format = EngineOptions.from_json(record.engine_options).output_format
    click.echo(
        f"run {status.run_id}: {status.headline}{f' ({kinds})' if kinds else ''}; "
        f"{FORMAT_NAMES.get(output_format, output_format)} in {record.out_dir}"
    )
    for line in status.reasons:
        click.echo(f"  {line}")
    if layer.get("empty_pages") or layer.get("garbled_pages"):
        click.echo(
            f"text layer: {plural(layer['empty_pages'], 'empty page')} in "
            f"{plural(layer['documents_with_empty_pages'], 'document')}, "
            f"{plural(layer['garbled_pages'], 'garbled page')} in "
            f"{plural(layer['documents_with_garbled_pages'], 'document')}; to OCR them: "
            f"{ocr_command(record.run_id, layer)}"
        )
    if status.next:
        click.echo(f"next: {status.next}")
    code = status.exit_code if exit_code is None else exit_code
    if code:
        raise SystemExit(code)


def _show_progress(asked: bool | None, machine: bool) -> bool:
    """The scan's progress bar: as asked, else only on a terminal and not for machine-read output."""
    if asked is not None:
        return asked
    return not machine and sys.stderr.isatty()


class ProgressPrinter:
    """A waiting (local) run's progress on stderr, at most every `every_s` seconds (from the commit logs
    alone: what is done; `hpcmarker status` says the rest)."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s, self.last = every_s, time.time()

    def __call__(self, paths) -> None:
        if time.time() - self.last < self.every_s:
            return
        self.last = time.time()
        from hpc_marker.manage.status import done_so_far

        done = done_so_far(paths)
        click.echo(
            f"  {done.items_done}/{plural(done.items, 'item')}, {done.pages_done}/{plural(done.pages, 'page')}",
            err=True,
        )


@click.command("plan")
@click.option("--pdfs", required=True, type=click.Path(path_type=Path))
@click.option("--gpus", default=1, show_default=True, type=COUNT)
@click.option("--split-pages", type=COUNT, help="As for submit (default derived; 0: never split).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--scan-workers",
    type=COUNT,
    metavar="N",
    show_default=True,
    help="Processes counting pages, each at nice 10 (at most one per core).",
)
@click.option(
    "--min-task-pages",
    type=COUNT,
    metavar="PAGES",
    show_default=True,
    help="As for submit: each task gets at least this many pages.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on stderr while scanning (default: on a terminal, except with --format json).",
)
def plan_command(pdfs, gpus, split_pages, fmt, scan_workers, min_task_pages, progress) -> None:
    """Print the plan (tasks, their work items and pages) without submitting."""
    from hpc_marker.planning.outnames import output_names
    from hpc_marker.planning.plan import make_plan, work_items
    from hpc_marker.planning.scan import ScanError, scan_pdfs
    from hpc_marker.submission.launch import fewer_tasks_note

    try:
        scanned = scan_pdfs(pdfs, scan_workers, cache=True, progress=_show_progress(progress, machine=fmt == "json"))
    except ScanError as exc:
        raise InputError(f"--pdfs {exc}") from None
    items = work_items(scanned, output_names([pdf.relpath for pdf in scanned]))  # json: each renamed out_name
    the_plan = make_plan(items, gpus, split_pages=split_pages, min_task_pages=min_task_pages)
    if len(the_plan.tasks) < gpus:
        click.echo(fewer_tasks_note(gpus, the_plan, len(scanned), min_task_pages), err=True)
    if fmt == "json":
        data = the_plan.to_json()
        data.update(pdfs=str(pdfs.resolve()), gpus=gpus, imbalance=round(the_plan.imbalance(), 4))
        click.echo(json.dumps(data, indent=1, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table(
        title=f"{plural(len(scanned), 'PDF')} ({plural(len(the_plan.items), 'work item')}), "
        f"{plural(the_plan.total_pages, 'page')} on {plural(len(the_plan.tasks), 'task')} "
        f"(busiest / ideal = {the_plan.imbalance():.3f})",
        title_justify="left",
    )
    for column in ("task", "pdf", "pages", "range"):
        table.add_column(column, justify="right" if column in ("task", "pages") else "left")
    for task in the_plan.tasks:
        for item in task.items:
            table.add_row(str(task.index), item.pdf, str(item.pages), item.page_label())
        table.add_row(str(task.index), "[bold]total", f"[bold]{task.pages}", "", end_section=True)
    Console().print(table)
