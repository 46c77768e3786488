"""The `hpcmarker` command line: a thin click layer over launch, status, cancel and collect.

User errors become one-line messages (exit 2 for bad input, 1 for a cluster that refused);
no stack traces. Every option can also come from an HPCMARKER_<COMMAND>_<OPTION> variable.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from hpc_marker import __version__
from hpc_marker.engines import ENGINE_NAMES, EngineOptions
from hpc_marker.runstate.record import RunNotFound, resolve_run


class InputError(click.ClickException):
    """Bad input: exit code 2, nothing submitted."""

    exit_code = 2


def _run_paths(run: str | None):
    try:
        return resolve_run(run)
    except RunNotFound as exc:
        raise InputError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "HPCMARKER"})
@click.version_option(__version__, prog_name="hpcmarker")
def cli() -> None:
    """Convert folders of PDFs to Markdown on a Slurm GPU cluster (or locally, without Slurm)."""


def _engine_options(force_ocr: bool, languages: str | None, marker_config: Path | None,
                    paginate: bool) -> EngineOptions:
    extra = {}
    if marker_config is not None:
        try:
            extra = EngineOptions.load_extra_config(marker_config)
        except ValueError as exc:
            raise InputError(f"--marker-config {exc}") from None
    langs = tuple(x.strip() for x in (languages or "").split(",") if x.strip())
    return EngineOptions(paginate=paginate, force_ocr=force_ocr, languages=langs, extra_config=extra)


def _workers_per_gpu(_ctx, _param, value) -> int:
    """auto (0: each task chooses, sizing.py) or a count of at least 1."""
    text = str(value).strip().lower()
    if text == "auto":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f"{value!r}: use auto or a number of at least 1")
    return int(text)


@cli.command()
@click.option("--pdfs", required=True, type=click.Path(path_type=Path), help="Folder to scan for PDFs (recursively).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the Markdown (and the run folder).")
@click.option("--gpus", default=1, show_default=True, type=int, help="GPUs = array tasks (at most one per work item).")
@click.option("--profile", default="generic", show_default=True,
              help="Partition profile from the config (template, partition, GRES, account, setup lines...).")
@click.option("--partition", help="Slurm partition (default: the profile's, else the cluster's default).")
@click.option("--template", help="sbatch template (default: the profile's; see `hpcmarker templates list`).")
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="marker", show_default=True,
              help="marker; text (the text layer, no models); benchmark (a benchmark tool: text output "
                   "at a fixed cost per page, HPCMARKER_BENCH_SECONDS_PER_PAGE).")
@click.option("--workers-per-gpu", default="auto", show_default=True, metavar="auto|N", callback=_workers_per_gpu,
              help="Worker processes per task; auto: from the GPU's memory, the task's CPUs and the engine.")
@click.option("--cpus-per-task", type=int, help="CPUs each array task asks for (default: the profile's, else 4).")
@click.option("--mem", help="Memory per task, as sbatch --mem takes it (e.g. 32G; default: the profile's).")
@click.option("--time", "time_limit", help="Time limit per task (default: the profile's, else 04:00:00).")
@click.option("--force-ocr", is_flag=True, help="OCR every page (marker).")
@click.option("--languages", help="Comma-separated languages for OCR (marker versions that take them).")
@click.option("--marker-config", type=click.Path(path_type=Path), help="JSON file of extra marker settings.")
@click.option("--paginate/--no-paginate", default=True, show_default=True, help="Page separators in the Markdown.")
@click.option("--executor", type=click.Choice(["auto", "slurm", "local"]), default="auto", show_default=True,
              help="auto: Slurm when sbatch is on PATH, else this machine.")
@click.option("--run-id", help="Name the run (default: a timestamp).")
@click.option("--split-pages", type=int, help="Split PDFs longer than this into page ranges "
              "(default: a quarter of total pages / GPUs, at least 16; 0: never split).")
@click.option("--steal/--no-steal", default=True, show_default=True,
              help="Tasks that run out of work take over other tasks' unfinished items.")
@click.option("--lease-seconds", default=120.0, show_default=True, type=float,
              help="A claimed item whose task stops renewing its claim this long is taken over.")
@click.option("--plan-strategy", type=click.Choice(["pages", "static"]), default="pages", show_default=True,
              help="static: marker's chunk_convert sharding (files in listing order, no split, no "
                   "stealing), for comparison.")
@click.option("--force", is_flag=True, help="Also convert PDFs whose outputs are complete and up to date.")
@click.option("--llm", "llm_model", metavar="MODEL", help="Refine with this Ollama model, served by a service job "
              "of the run (marker: --use_llm; text: each page rewritten as clean Markdown).")
@click.option("--llm-gpus", default=1, show_default=True, type=int, help="GPUs of the LLM service job.")
@click.option("--llm-parallel", default=4, show_default=True, type=int,
              help="OLLAMA_NUM_PARALLEL: concurrent generations (choose with `hpcmarker llm bench`).")
@click.option("--llm-ctx", type=int, help="num_ctx of the model (a derived model is created and reused).")
@click.option("--llm-option", "llm_options", multiple=True, metavar="KEY=VALUE",
              help="Further model parameters (e.g. temperature=0); repeatable.")
@click.option("--llm-wait", default=900.0, show_default=True, type=float,
              help="Seconds a task waits for the LLM service before failing.")
@click.option("--llm-bind", metavar="HOST", help="Address of the service's authenticating front "
              "(default: the service node's hostname address).")
@click.option("--item-timeout", default="auto", show_default=True, metavar="auto|off|SECONDS|[BASE+]SECONDS/page",
              help="Wall-clock limit per work item; past it only that item's worker is ended and the item is "
                   "recorded `timeout` (auto: 300 s + 60 s/page; a worker's first item also gets the engine's "
                   "model-loading allowance: marker 600 s, text 30 s).")
@click.option("--worker-memory", metavar="SIZE", help="Address-space cap per worker (e.g. 8G) for CPU engines: "
              "an item that needs more fails alone (marker: use --mem).")
@click.option("--permissions", type=click.Choice(["private", "group", "world"]), default="private",
              show_default=True, help="Who may read the Markdown written (the run folder stays private).")
@click.option("--inference-server", type=click.Choice(["auto", "off", "native", "apptainer", "singularity"]),
              help="marker 2.x's VLM server, one per task: native (`vllm serve` from the job's environment), "
                   "apptainer (in the profile's inference_image), off (SURYA_INFERENCE_URL or surya's own); "
                   "auto (default): the profile's inference_server, else native.")
@click.option("--inference-startup-timeout", type=float, metavar="SECONDS",
              help="Seconds a task waits for its inference server to answer (default 900).")
@click.option("--dry-run", is_flag=True, help="Do everything but submit; print the sbatch scripts.")
def submit(pdfs, out, gpus, profile, partition, template, engine, workers_per_gpu, cpus_per_task, mem, time_limit,
           force_ocr, languages, marker_config, paginate, executor, run_id, split_pages, steal, lease_seconds,
           plan_strategy, force, llm_model, llm_gpus, llm_parallel, llm_ctx, llm_options, llm_wait, llm_bind,
           item_timeout, worker_memory, permissions, inference_server, inference_startup_timeout, dry_run) -> None:
    """Scan PDFS, plan, and submit the conversion array and its collector."""
    from hpc_marker.executors.local import LocalRunFailed
    from hpc_marker.slurm.commands import SlurmError
    from hpc_marker.submission.launch import (
        LaunchError,
        LlmRequest,
        NothingToDo,
        SubmitRequest,
        dry_run_text,
        prepare_run,
        submit_run,
    )

    llm = None
    if llm_model:
        from hpc_marker.cli.llm import parse_option

        try:
            parsed = dict(parse_option(text) for text in llm_options)
        except click.ClickException as exc:
            raise InputError(exc.message) from None
        llm = LlmRequest(model=llm_model, gpus=llm_gpus, parallel=llm_parallel, ctx=llm_ctx, options=parsed,
                         wait_timeout_s=llm_wait, bind_host=llm_bind)
    elif llm_options or llm_ctx:
        raise InputError("--llm-ctx and --llm-option need --llm MODEL")
    request = SubmitRequest(
        pdfs=pdfs, out=out, gpus=gpus, engine=engine,
        engine_options=_engine_options(force_ocr, languages, marker_config, paginate),
        profile=profile, partition=partition, template=template, workers_per_gpu=workers_per_gpu,
        cpus_per_task=cpus_per_task,
        mem=mem, time_limit=time_limit, executor=executor, run_id=run_id, split_pages=split_pages, steal=steal,
        lease_seconds=lease_seconds, strategy=plan_strategy, force=force, llm=llm, item_timeout=item_timeout,
        worker_memory=worker_memory, permissions=permissions, inference_server=inference_server,
        inference_startup_timeout=inference_startup_timeout)
    try:
        prepared = prepare_run(request, create=not dry_run)
    except NothingToDo as exc:
        click.echo(str(exc))
        return
    except LaunchError as exc:
        raise InputError(str(exc)) from None
    if dry_run:
        click.echo(dry_run_text(prepared), nl=False)
        return
    plan, record = prepared.plan, prepared.record
    if prepared.up_to_date:
        click.echo(f"skipping {len(prepared.up_to_date)} PDFs whose outputs are up to date (--force redoes them)")
    click.echo(f"run {record.run_id}: {len(prepared.scanned)} PDFs ({len(plan.items)} work items), "
               f"{plan.total_pages} pages, {record.tasks} tasks ({record.executor}); run folder {prepared.paths.root}")
    unreadable = [p for p in prepared.scanned if p.error]
    for pdf in unreadable:
        click.echo(f"  will fail: {pdf.relpath}: {pdf.error}", err=True)
    try:
        record = submit_run(prepared, progress=_print_progress if record.executor == "local" else None)
    except SlurmError as exc:
        raise click.ClickException(f"{exc} (script: {prepared.paths.scripts})") from None
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted: run {record.run_id} stopped") from None
    except LocalRunFailed as exc:
        raise click.ClickException(f"run {record.run_id}: {exc}; when fixed: hpcmarker retry {record.run_id}") from None
    if record.executor == "slurm":
        click.echo(f"submitted: array {record.jobs['convert'][0].split('_')[0]} "
                   f"({record.tasks} tasks), collector {record.jobs['collect'][0]}")
        click.echo(f"follow it with: hpcmarker status {record.run_id}")
    else:
        summary = json.loads(prepared.paths.summary.read_text())
        kinds = ", ".join(f"{n} {status}" for status, n in summary.get("by_status", {}).items()
                          if n and status not in ("ok", "failed"))
        click.echo(f"done: {summary['ok']} ok, {summary['failed']} failed{f' ({kinds})' if kinds else ''}; "
                   f"Markdown in {record.out_dir}")
        for failure in summary["failures"]:
            click.echo(f"  {failure.get('status', 'failed')}: {failure['pdf']}: {failure['error']}", err=True)


_last_progress: list[float] = [0.0]


def _print_progress(paths) -> None:
    if time.time() - _last_progress[0] < 5:
        return
    _last_progress[0] = time.time()
    from hpc_marker.manage.status import load_status

    s = load_status(paths)
    click.echo(f"  {s.ok + s.failed}/{s.items} items, {s.pages_done}/{s.pages} pages", err=True)


@cli.command()
@click.option("--pdfs", required=True, type=click.Path(path_type=Path))
@click.option("--gpus", default=1, show_default=True, type=int)
@click.option("--split-pages", type=int, help="As for submit (default derived; 0: never split).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def plan(pdfs, gpus, split_pages, fmt) -> None:
    """Print the plan (tasks, their work items and pages) without submitting."""
    from hpc_marker.planning.plan import make_plan, work_items
    from hpc_marker.planning.scan import ScanError, scan_pdfs

    if gpus < 1:
        raise InputError(f"--gpus {gpus}: must be at least 1")
    try:
        scanned = scan_pdfs(pdfs)
    except ScanError as exc:
        raise InputError(f"--pdfs {exc}") from None
    the_plan = make_plan(work_items(scanned), gpus, split_pages=split_pages)
    if fmt == "json":
        data = the_plan.to_json()
        data.update(pdfs=str(pdfs.resolve()), gpus=gpus, imbalance=round(the_plan.imbalance(), 4))
        click.echo(json.dumps(data, indent=1, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table(title=f"{len(the_plan.items)} PDFs, {the_plan.total_pages} pages on {len(the_plan.tasks)} tasks "
                        f"(busiest / ideal = {the_plan.imbalance():.3f})", title_justify="left")
    for column in ("task", "pdf", "pages", "range"):
        table.add_column(column, justify="right" if column in ("task", "pages") else "left")
    for task in the_plan.tasks:
        for item in task.items:
            table.add_row(str(task.index), item.pdf, str(item.pages), item.page_label())
        table.add_row(str(task.index), "[bold]total", f"[bold]{task.pages}", "", end_section=True)
    Console().print(table)


@cli.command()
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh a live table until the run is over (Ctrl-C to leave).")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--cancel-wedged/--no-cancel-wedged", default=True, show_default=True,
              help="When a job of the run can never start (DependencyNeverSatisfied), cancel what the run "
                   "left queued, so that `resume` can follow; --no-cancel-wedged only reports it.")
def status(run, as_json, watch, interval, cancel_wedged) -> None:
    """Where RUN (default: the latest) stands: per task state and progress, rate, ETA."""
    from hpc_marker.manage.cancel import CancelError
    from hpc_marker.manage.status import load_status, status_table, watch_status
    from hpc_marker.slurm.commands import SlurmError

    paths = _run_paths(run)
    try:
        if watch and not as_json:
            result = watch_status(paths, interval, cancel_wedged)
        else:
            result = load_status(paths, cancel_wedged)
    except (SlurmError, CancelError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    elif not watch:
        Console().print(status_table(result))
    if result.wedged:
        click.echo(result.wedged, err=as_json)


@cli.command()
@click.argument("run", required=False)
def cancel(run) -> None:
    """Cancel every job of RUN (default: the latest)."""
    from hpc_marker.manage.cancel import CancelError, cancel_run
    from hpc_marker.slurm.commands import SlurmError

    paths = _run_paths(run)
    try:
        ids = cancel_run(paths)
    except (SlurmError, CancelError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"cancelled run {paths.run_id}: {', '.join(ids) or 'no jobs'}")


def _resume(run: str | None, retry_failed: bool, include_poison: bool = False) -> None:
    from hpc_marker.executors.local import LocalRunFailed
    from hpc_marker.slurm.commands import SlurmError
    from hpc_marker.submission.launch import LaunchError
    from hpc_marker.submission.resume import resume_run

    paths = _run_paths(run)
    try:
        result = resume_run(paths, retry_failed=retry_failed, include_poison=include_poison)
    except LaunchError as exc:
        raise InputError(str(exc)) from None
    except SlurmError as exc:
        raise click.ClickException(str(exc)) from None
    except LocalRunFailed as exc:
        raise click.ClickException(f"run {paths.run_id}: {exc}") from None
    if retry_failed:
        click.echo(f"reopened {result.reopened} failed items"
                   + (f"; {len(result.poison)} poison items kept as failed (--include-poison retries them)"
                      if result.poison else ""))
    if not result.tasks:
        click.echo(f"run {paths.run_id}: nothing left to convert; collected")
        return
    click.echo(f"run {paths.run_id}: {result.unfinished} unfinished items; resubmitted tasks "
               f"{','.join(map(str, result.tasks))} as {', '.join(result.jobs['convert'])}, "
               f"collector {', '.join(result.jobs['collect'])}")


@cli.command()
@click.argument("run", required=False)
def resume(run) -> None:
    """Submit only what RUN (default: the latest) has not finished; nothing done is redone."""
    _resume(run, retry_failed=False)


@cli.command()
@click.argument("run", required=False)
@click.option("--include-poison", is_flag=True, help="Also retry items that already failed 3 times.")
def retry(run, include_poison) -> None:
    """Re-run RUN's failed items (and whatever is unfinished); poison items keep their error."""
    _resume(run, retry_failed=True, include_poison=include_poison)


@cli.command()
@click.argument("run", required=False)
def collect(run) -> None:
    """Merge RUN's manifests and logs by hand (the collector job does the same)."""
    from hpc_marker.manage.collect import collect_run

    paths = _run_paths(run)
    summary = collect_run(str(paths.root))
    click.echo(f"wrote {paths.manifest_csv} and {paths.summary}")
    if summary["torn_manifest_lines"]:
        click.echo(f"{len(summary['torn_manifest_lines'])} torn manifest lines reported", err=True)


@cli.command()
@click.argument("run", required=False)
def report(run) -> None:
    """Write RUN/report.html (default: the latest run): tasks over time, pages/s, failures, slowest PDFs, LLM."""
    from hpc_marker.report.page import write_report

    paths = _run_paths(run)
    try:
        path = write_report(paths.root)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot write the report of run {paths.run_id}: {exc}") from None
    click.echo(str(path))


def _add_command_groups() -> None:
    from hpc_marker.admin.prefetch import prefetch_command
    from hpc_marker.cli.admin import config, doctor_command, templates
    from hpc_marker.cli.llm import llm

    for group in (llm, templates, config, doctor_command, prefetch_command):
        cli.add_command(group)


_add_command_groups()


def main() -> None:
    from hpc_marker.config import ConfigError, load_config

    try:
        default_map = load_config().default_map()
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    cli(prog_name="hpcmarker", default_map=default_map)


if __name__ == "__main__":
    sys.exit(main())
