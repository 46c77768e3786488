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
from hpc_marker.cli.submitopts import schema_options, sections
from hpc_marker.config.types import COUNT, OCR, PAGES
from hpc_marker.slurm.parse import base_id
from hpc_marker.util.text import plural

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


@click.command(cls=SectionedCommand, sections=sections("submit"), examples=SUBMIT_EXAMPLES)
@schema_options("submit")
def submit(**options) -> None:
    """Scan PDFS, plan, and submit the conversion array and its collector.

    With Slurm (sbatch on PATH) this queues the jobs and returns; `hpcmarker status` follows them. Without it
    (or with --executor local) the run happens here and `submit` waits for it: it then ends with the run's
    state, why it is incomplete if it is, the next command, and the exit code `status` gives (0 finished,
    3 finished with failed items or lost pages, 4 incomplete, 130 interrupted)."""
    from hpc_marker.submission.launch import prepare_run, submit_run
    from hpc_marker.submission.request import NothingToDo, SubmitRequest
    from hpc_marker.submission.scripts import dry_run_text

    dry_run = options["dry_run"]
    options["progress"] = _show_progress(options["progress"], machine=dry_run)
    if options["llm_model"]:
        options["llm_options"] = dict(parse_option(text) for text in options["llm_options"])
    request = SubmitRequest.from_options(options)
    try:
        prepared = prepare_run(request, create=not dry_run)
    except NothingToDo as exc:
        click.echo(str(exc))
        return
    if dry_run:
        for note in prepared.notes:
            click.echo(note, err=True)
        click.echo(dry_run_text(prepared.scripts, prepared.record.llm.replicas if prepared.record.llm else 1), nl=False)
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
    ocr = f" ({sum(i.pages for i in plan.items if i.ocr):,} to OCR)" if record.engine_options.ocr_auto else ""
    click.echo(
        f"run {record.run_id}: {plural(len(prepared.scanned), 'PDF')} ({plural(len(plan.items), 'work item')}), "
        f"{plural(plan.total_pages, 'page')}{ocr}, {plural(record.tasks, 'task')} ({record.executor}); "
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
    from hpc_marker.submission.estimate import submit_line

    if (line := submit_line(record, len(prepared.scanned), plan.total_pages)) is not None:
        click.echo(line)
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
    line per cause of what is left, --force-ocr auto's routing, the flagged text layer, the next command; then
    exit with `status`'s code (or `exit_code`)."""
    from hpc_marker.manage.status import load_status
    from hpc_marker.runstate.documents import routing_line
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
    output_format = record.engine_options.output_format
    click.echo(
        f"run {status.run_id}: {status.headline}{f' ({kinds})' if kinds else ''}; "
        f"{FORMAT_NAMES.get(output_format, output_format)} in {record.out_dir}"
    )
    for line in status.reasons:
        click.echo(f"  {line}")
    if layer.get("routed"):
        click.echo(routing_line(layer["routed"]))
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
        self.logs: dict = {}  # the commit logs, each opened once for every look (closed when the process ends)

    def __call__(self, paths) -> None:
        if time.time() - self.last < self.every_s:
            return
        self.last = time.time()
        from hpc_marker.manage.tally import done_so_far
        from hpc_marker.runstate.progress import logs_kept_open

        with logs_kept_open(self.logs):
            done = done_so_far(paths)
        click.echo(
            f"  {done.items_done}/{plural(done.items, 'item')}, {done.pages_done}/{plural(done.pages, 'page')}",
            err=True,
        )


@click.command("plan")
@click.option("--pdfs", required=True, type=click.Path(path_type=Path))
@click.option("--gpus", default=1, show_default=True, type=COUNT)
@click.option("--split-pages", type=PAGES, help="As for submit (default derived; 0: never split).")
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
    "--force-ocr",
    type=OCR,
    is_flag=False,
    flag_value="all",
    default=None,
    help="As for submit; auto: each item says whether its document gets OCR, and those pages weigh more.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on stderr while scanning (default: on a terminal, except with --format json).",
)
def plan_command(pdfs, gpus, split_pages, fmt, scan_workers, min_task_pages, force_ocr, progress) -> None:
    """Print the plan (tasks, their work items and pages) without submitting."""
    from hpc_marker.planning.outnames import output_names
    from hpc_marker.planning.plan import make_plan, work_items
    from hpc_marker.planning.scan import ScanError, scan_pdfs
    from hpc_marker.planning.textcheck import OcrRouting
    from hpc_marker.submission.launch import fewer_tasks_note

    routing = OcrRouting.from_config() if force_ocr == "auto" else None
    try:
        scanned = scan_pdfs(
            pdfs,
            scan_workers,
            cache=True,
            progress=_show_progress(progress, machine=fmt == "json"),
            sample_pages=routing.sample_pages if routing else 0,
        )
    except ScanError as exc:
        raise InputError(f"--pdfs {exc}") from None
    items = work_items(scanned, output_names([pdf.relpath for pdf in scanned]), routing)  # json: each out_name
    weight = routing.page_weight if routing else 1.0
    the_plan = make_plan(items, gpus, split_pages=split_pages, min_task_pages=min_task_pages, page_weight=weight)
    if len(the_plan.tasks) < gpus:
        click.echo(fewer_tasks_note(gpus, the_plan, len(scanned), min_task_pages), err=True)
    if fmt == "json":
        data = the_plan.to_json()
        data.update(pdfs=str(pdfs.resolve()), gpus=gpus, imbalance=round(the_plan.imbalance(), 4))
        click.echo(json.dumps(data, indent=1, ensure_ascii=False))
        return
    Console().print(_plan_table(the_plan, len(scanned), routed=routing is not None))


def _plan_table(the_plan, pdfs: int, routed: bool):
    """`plan`'s table: per task, its items (with `ocr` under --force-ocr auto) and its pages."""
    from rich.table import Table

    ocr_pages = sum(item.pages for item in the_plan.items if item.ocr)
    table = Table(
        title=f"{plural(pdfs, 'PDF')} ({plural(len(the_plan.items), 'work item')}), "
        f"{plural(the_plan.total_pages, 'page')}{f' ({ocr_pages:,} to OCR)' if routed else ''} on "
        f"{plural(len(the_plan.tasks), 'task')} (busiest / ideal = {the_plan.imbalance():.3f}"
        f"{f', OCR pages weigh {the_plan.page_weight:g}' if routed else ''})",
        title_justify="left",
    )
    columns = ("task", "pdf", "pages", "range", *(("ocr",) if routed else ()))
    for column in columns:
        table.add_column(column, justify="right" if column in ("task", "pages") else "left")
    for task in the_plan.tasks:
        for item in task.items:
            ocr = ("yes" if item.ocr else "no",) if routed else ()
            table.add_row(str(task.index), item.pdf, str(item.pages), item.page_label(), *ocr)
        table.add_row(
            str(task.index), "[bold]total", f"[bold]{task.pages}", "", *([""] if routed else []), end_section=True
        )
    return table
