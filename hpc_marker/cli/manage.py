"""After submission: `status`, `cancel`, `resume`, `retry`, `collect` and `report` of a run."""

from __future__ import annotations

import json

import click
from rich.console import Console

from hpc_marker.cli.group import run_paths


@click.command()
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh a live table until the run is over (Ctrl-C to leave).")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--cancel-wedged/--no-cancel-wedged", default=True, show_default=True,
              help="When a job of the run can never start (DependencyNeverSatisfied), cancel what the run "
                   "left queued, so that `resume` can follow; --no-cancel-wedged only reports it.")
def status(run, as_json, watch, interval, cancel_wedged) -> None:
    """Where RUN (default: the latest) stands: per task state and progress, rate, ETA."""
    from hpc_marker.manage.status import load_status, status_table, watch_status

    paths = run_paths(run)
    if watch and not as_json:
        result = watch_status(paths, interval, cancel_wedged)
    else:
        result = load_status(paths, cancel_wedged)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    elif not watch:
        Console().print(status_table(result))
    if result.wedged:
        click.echo(result.wedged, err=as_json)


@click.command()
@click.argument("run", required=False)
def cancel(run) -> None:
    """Cancel every job of RUN (default: the latest)."""
    from hpc_marker.manage.cancel import cancel_run
    from hpc_marker.slurm.parse import fold_job_ids

    paths = run_paths(run)
    ids = cancel_run(paths)
    click.echo(f"cancelled run {paths.run_id}: {', '.join(fold_job_ids(ids)) or 'no jobs'}")


def _resume(run: str | None, retry_failed: bool, include_poison: bool = False) -> None:
    from hpc_marker.executors.local import LocalRunFailed
    from hpc_marker.slurm.parse import fold_job_ids, index_ranges
    from hpc_marker.submission.resume import resume_run

    paths = run_paths(run)
    try:
        result = resume_run(paths, retry_failed=retry_failed, include_poison=include_poison)
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
               f"{index_ranges(result.tasks)} as {', '.join(fold_job_ids(result.jobs['convert']))}, "
               f"collector {', '.join(result.jobs['collect'])}")


@click.command()
@click.argument("run", required=False)
def resume(run) -> None:
    """Submit only what RUN (default: the latest) has not finished; nothing done is redone."""
    _resume(run, retry_failed=False)


@click.command()
@click.argument("run", required=False)
@click.option("--include-poison", is_flag=True, help="Also retry items that already failed 3 times.")
def retry(run, include_poison) -> None:
    """Re-run RUN's failed items (and whatever is unfinished); poison items keep their error."""
    _resume(run, retry_failed=True, include_poison=include_poison)


@click.command()
@click.argument("run", required=False)
def collect(run) -> None:
    """Merge RUN's manifests and logs by hand (the collector job does the same)."""
    from hpc_marker.manage.collect import collect_run

    paths = run_paths(run)
    summary = collect_run(str(paths.root))
    click.echo(f"wrote {paths.manifest_csv} and {paths.summary}")
    if summary["torn_manifest_lines"]:
        click.echo(f"{len(summary['torn_manifest_lines'])} torn manifest lines reported", err=True)


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
