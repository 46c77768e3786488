"""After submission: `status`, `cancel`, `resume`, `retry` (and follow-up runs), `collect`, `report` and
`export` of a run."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from hpc_marker.cli.group import InputError, run_paths
from hpc_marker.cli.sections import SectionedCommand
from hpc_marker.cli.submitopts import schema_options, sections
from hpc_marker.config.options import options_of
from hpc_marker.engines import EngineOptions
from hpc_marker.runstate.permissions import PERMISSIONS
from hpc_marker.util.text import plural

EXIT_NO_ROWS = 3  # export: the run has documents, but none was written (as status: finished, items failed)


@click.command()
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh a live table until the run is over (Ctrl-C to leave).")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option(
    "--fix/--no-fix",
    "--cancel-wedged/--no-cancel-wedged",
    "cancel_wedged",
    default=False,
    help="When a job of the run can never start (DependencyNeverSatisfied), cancel what the run "
    "left queued, so that `resume` can follow (as `hpcmarker cancel RUN` does). Without it, "
    "status changes nothing: it reports the wedge and the command that fixes it.",
)
def status(run, as_json, watch, interval, cancel_wedged) -> None:
    """Where RUN (default: the latest; a run id, its folder, or the --out folder) stands: per task state and
    progress, rate, ETA; why it stopped and what to do next.

    Exit code: 0 while the run goes on, or finished with every item ok; 3 finished, but some items
    failed; 4 incomplete (items left, nothing running) or wedged; 130 when --watch is left with Ctrl-C."""
    from hpc_marker.manage.status import load_status
    from hpc_marker.manage.statustable import status_table, verdict_lines, watch_status

    paths = run_paths(run)
    if watch and not as_json:
        try:
            result = watch_status(paths, interval, cancel_wedged)
        except KeyboardInterrupt:
            raise SystemExit(130) from None
    else:
        result = load_status(paths, cancel_wedged)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    else:
        if not watch:  # --watch left its last table on the screen
            Console().print(status_table(result))
        for line in verdict_lines(result):
            click.echo(line)
    if result.wedged:
        click.echo(result.wedged, err=as_json)
    if result.exit_code:
        raise SystemExit(result.exit_code)


@click.command()
@click.argument("run", required=False)
def cancel(run) -> None:
    """Cancel every job of RUN (default: the latest)."""
    from hpc_marker.manage.cancel import cancel_run
    from hpc_marker.slurm.parse import fold_job_ids

    paths = run_paths(run)
    done = cancel_run(paths)
    if done.ended:
        click.echo(f"cancelled run {paths.run_id}: {', '.join(fold_job_ids(done.ended))}")
    else:
        jobs = f" (jobs {', '.join(fold_job_ids(done.jobs))})" if done.jobs else ""
        click.echo(f"run {paths.run_id} was already over: nothing of it was queued or running{jobs}; nothing cancelled")


# What retry without --select may change of the resubmitted tasks (resume: all of its options).
RETRY_RESOURCES = tuple(option for option, use in options_of("retry") if use.group == "resources")


def _resume(run: str | None, retry_failed: bool, options: dict, include_poison: bool = False) -> None:
    from hpc_marker.executors.local import LocalRunFailed
    from hpc_marker.slurm.parse import fold_job_ids, index_ranges
    from hpc_marker.submission.overrides import ResumeOverrides
    from hpc_marker.submission.resume import resume_run

    paths = run_paths(run)
    force_concurrent = options.pop("force_concurrent")
    try:
        result = resume_run(
            paths,
            retry_failed=retry_failed,
            include_poison=include_poison,
            overrides=ResumeOverrides(**options),
            force_concurrent=force_concurrent,
        )
    except LocalRunFailed as exc:
        raise click.ClickException(f"run {paths.run_id}: {exc}") from None
    if retry_failed:
        click.echo(
            f"reopened {plural(result.reopened, 'failed item')}"
            + (
                f"; {plural(len(result.poison), 'poison item')} kept as failed (--include-poison retries them)"
                if result.poison
                else ""
            )
        )
    if not result.tasks:
        click.echo(f"run {paths.run_id}: nothing left to convert; collected")
        return
    click.echo(
        f"run {paths.run_id}: {plural(result.unfinished, 'unfinished item')}; resubmitted tasks "
        f"{index_ranges(result.tasks)} as {', '.join(fold_job_ids(result.jobs['convert']))}, "
        f"collector {', '.join(result.jobs['collect'])}"
    )
    _exit_with_local_verdict(paths)


def _exit_with_local_verdict(paths) -> None:
    """After a run this command waited for (local): its verdict, and its exit code."""
    from hpc_marker.executors import executor_for

    if executor_for(paths.load_record().executor).waits:
        from hpc_marker.cli.run import tell_verdict

        tell_verdict(paths)


@click.command(cls=SectionedCommand, sections=sections("resume"))
@click.argument("run", required=False)
@schema_options("resume")
def resume(run, **options) -> None:
    """Submit only what RUN (default: the latest) has not finished; nothing done is redone. The options
    change the resources of what is resubmitted (a run that hit its time limit: --time)."""
    _resume(run, retry_failed=False, options=options)


def _selectors(_ctx, _param, value: str | None) -> tuple[str, ...] | None:
    """--select no-text,garbled as its selectors; a value that is none: one line, exit 2."""
    from hpc_marker.submission.followup import parse_selectors
    from hpc_marker.submission.request import LaunchError

    try:
        return None if value is None else parse_selectors(value)
    except LaunchError as exc:
        raise InputError(str(exc)) from None


@click.command(
    cls=SectionedCommand,
    sections=sections("retry", {"Failed items": ("include_poison",), "Follow-up run": ("selector", "min_share")}),
)
@click.argument("run", required=False)
@click.option("--include-poison", is_flag=True, help="Also retry items that already failed 3 times.")
@click.option(
    "--select",
    "selector",
    metavar="SELECTOR[,...]",
    callback=_selectors,
    help="Convert these documents of RUN again as a new run (a follow-up of RUN) with the settings "
    "given here, the others as RUN's: no-text (pages with an empty text layer), garbled (pages "
    "of a garbled text layer), partial (pages lost), failed (failed, timed out, incomplete); "
    "several comma-separated (no-text,garbled): the documents any of them picks.",
)
@click.option(
    "--min-share",
    type=float,
    show_default=True,
    metavar="SHARE",
    help="no-text/garbled: the share of a document's pages that must carry the flag (0: any page).",
)
@schema_options("retry")
def retry(run, include_poison, selector, min_share, marker_config, dry_run, **options) -> None:
    """Re-run RUN's failed items and lost pages (and whatever is unfinished); poison items keep their error.
    The resource options change the resources of what is resubmitted (a page that timed out: --item-timeout).

    With --select, the selected documents are converted again as a new run with other settings
    (e.g. `--select garbled --engine marker --force-ocr`), into the same output folder: the two-pass
    workflow. `hpcmarker export RUN` then takes each document's newest ok result."""
    from hpc_marker.submission.followup import RunOverrides

    resources = {option.name: options.pop(option.name) for option in RETRY_RESOURCES}
    extra = None
    if marker_config is not None:
        try:
            extra = EngineOptions.load_extra_config(marker_config)
        except ValueError as exc:
            raise InputError(f"--marker-config {exc}") from None
    overrides = RunOverrides(extra_config=extra, **options)
    if selector is None:
        if overrides.given() or dry_run:
            raise InputError(
                "settings (--engine, --force-ocr, ...) and --dry-run apply to a follow-up run: add --select"
            )
        _resume(run, retry_failed=True, options=resources, include_poison=include_poison)
        return
    if any(value not in (None, False) for value in resources.values()):
        flags = [option.flag for option in RETRY_RESOURCES]
        raise InputError(
            f"{', '.join(flags[:-1])} and {flags[-1]} apply to retry without --select (a follow-up run has RUN's "
            "resources)"
        )
    _follow_up(run, selector, min_share, overrides, dry_run)


def _follow_up(run: str | None, selectors: tuple[str, ...], min_share: float, overrides, dry_run: bool) -> None:
    from hpc_marker.cli.run import (
        ProgressPrinter,
        discarded_unless_submitted,
        submit_prepared,
    )
    from hpc_marker.submission.followup import prepare_followup
    from hpc_marker.submission.launch import submit_run
    from hpc_marker.submission.request import NothingToDo

    paths = run_paths(run)
    try:
        follow = prepare_followup(paths, selectors, min_share, overrides, create=not dry_run)
    except NothingToDo as exc:
        click.echo(str(exc))
        return
    selected = (
        f"run {paths.run_id}: {plural(len(follow.selected), 'document')} selected by --select {','.join(selectors)}"
    )
    if dry_run:
        click.echo("\n".join([selected, *(f"  {pdf}" for pdf in follow.selected)]))
        return
    prepared = follow.prepared
    with discarded_unless_submitted(prepared):  # its folder is made: from here on, it is sent or it goes
        click.echo(selected)
        submit_prepared(prepared, lambda: submit_run(prepared, progress=ProgressPrinter()))


@click.command()
@click.argument("run", required=False)
@click.option("--task", type=int, metavar="I", help="Task I's log (and its inference server's).")
@click.option("--service", is_flag=True, help="The LLM service's logs.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what the logs gain until the run's jobs are over.")
def logs(run, task, service, follow) -> None:
    """Print RUN's log (default: the latest run; the first task that stopped early, else the one that tried the
    first failed document, else the collector's)."""
    from hpc_marker.manage import logs as run_logs

    paths = run_paths(run)
    chosen = run_logs.choose_logs(paths, task, service)

    def write(text: str) -> None:
        click.echo(text, nl=False)

    if not follow:
        run_logs.show(chosen, write)
        return
    try:
        run_logs.follow(paths, chosen, write)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@click.command()
@click.argument("run", required=False)
def collect(run) -> None:
    """Merge RUN's manifests and logs by hand (the collector job does the same)."""
    from hpc_marker.manage.collect import collect_run

    paths = run_paths(run)
    summary = collect_run(str(paths.root))
    click.echo(f"wrote {paths.manifest_csv} and {paths.summary}")
    if summary["torn_manifest_lines"]:
        click.echo(f"{plural(len(summary['torn_manifest_lines']), 'torn manifest line')} reported", err=True)


@click.command()
@click.argument("run", required=False)
def report(run) -> None:
    """Write RUN/report.html (default: the latest run): tasks over time, pages/s, failures, slowest PDFs, LLM."""
    from hpc_marker.report.page import write_report

    paths = run_paths(run)
    try:
        path = write_report(paths.root)
    except (OSError, json.JSONDecodeError) as exc:  # a full disk; a summary.json cut short
        raise click.ClickException(f"cannot write the report of run {paths.run_id}: {exc}") from None
    click.echo(str(path))


@click.command()
@click.argument("run", required=False)
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["parquet", "jsonl"]),
    required=True,
    help="parquet (pyarrow, zstd) or jsonl (one JSON object a line).",
)
@click.option(
    "--to",
    "folder",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for the shards and their manifest (_export.json); created, must be empty.",
)
@click.option("--include-failed", is_flag=True, help="Also rows for documents that are not ok (text empty).")
@click.option("--rows-per-shard", type=int, show_default=True, help="Close a shard at this many rows.")
@click.option(
    "--shard-size",
    show_default=True,
    metavar="SIZE",
    help="Close a shard at this much text and metadata (e.g. 512M; before compression).",
)
@click.option(
    "--follow-ups/--no-follow-ups",
    default=None,
    show_default=True,
    help="Take each document's newest ok result from RUN's follow-up runs (retry --select) too.",
)
@click.option("--overwrite", is_flag=True, help="Replace a previous export in that folder.")
@click.option(
    "--permissions",
    type=click.Choice(list(PERMISSIONS)),
    help="Who may read the export (default: as the run's outputs, its submit --permissions).",
)
def export(
    run, export_format, folder, include_failed, rows_per_shard, shard_size, follow_ups, overwrite, permissions
) -> None:
    """Write RUN's documents as one dataset: a row per document. RUN defaults to the latest run; an --out
    folder or the default stands for the first run of that run's follow-ups (retry --select), so the
    folder's results are exported whole.

    Exit code: 0 rows written; 3 no row, though the run has documents (none ok: --include-failed)."""
    from hpc_marker.export import export_run
    from hpc_marker.runstate.index import resolve_run
    from hpc_marker.runtime.limits import parse_memory

    try:
        shard_bytes = parse_memory(shard_size)
    except ValueError as exc:
        raise InputError(f"--shard-size {exc}") from None
    paths = resolve_run(run, lineage=True)
    result = export_run(
        paths,
        folder,
        export_format,
        include_failed=include_failed,
        rows_per_shard=rows_per_shard,
        shard_bytes=shard_bytes,
        follow_ups=follow_ups,
        overwrite=overwrite,
        umask=None if permissions is None else PERMISSIONS[permissions],
    )
    others = {status: n for status, n in result.by_status.items() if status != "ok"}
    click.echo(
        f"run {paths.run_id}: {plural(result.rows, 'row')} in {plural(len(result.shards), 'shard')} in "
        f"{result.folder} "
        f"(manifest _export.json)"
        + (
            f"; not ok: {', '.join(f'{n} {s}' for s, n in sorted(others.items()))}"
            + ("" if include_failed else " (--include-failed adds them)")
            if others
            else ""
        )
    )
    if not result.rows:
        raise SystemExit(EXIT_NO_ROWS)
