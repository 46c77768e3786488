"""Changing a run after submission: `cancel`, `resume`, `retry` (and follow-up runs of `retry --select`), `grow`
(tasks added to a running run), and `continue`, the collector's next round (hidden).

(`status` and `logs` are cli/watch.py; `collect`, `report` and `export` cli/outputs.py.)"""

from __future__ import annotations

import signal

import click

from hpc_marker.cli.group import InputError, run_paths
from hpc_marker.cli.sections import SectionedCommand
from hpc_marker.cli.submitopts import schema_options, sections
from hpc_marker.config.options import options_of
from hpc_marker.engines import EngineOptions
from hpc_marker.util.text import plural


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


@click.command("continue", hidden=True)
@click.argument("run")
def continue_command(run) -> None:
    """Submit RUN's next round (the collector job runs this: docs/user-guide.md, rounds)."""
    from hpc_marker.slurm.parse import fold_job_ids, index_ranges
    from hpc_marker.submission.resume import continue_run

    # `cancel` ends the collector with SIGTERM: this finishes its submission, sees the run's cancel mark and
    # cancels what it queued itself (Slurm's SIGKILL follows after KillWait, 30 s by default)
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    paths = run_paths(run)
    try:
        result = continue_run(paths)
    finally:
        signal.signal(signal.SIGTERM, before)
    if result.tasks:
        click.echo(
            f"run {paths.run_id}: round {len(paths.load_record().rounds)}: tasks {index_ranges(result.tasks)} as "
            f"{', '.join(fold_job_ids(result.jobs['convert']))}, collector {', '.join(result.jobs['collect'])}"
        )


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


@click.command(cls=SectionedCommand, sections=sections("grow"))
@click.argument("run")
@schema_options("grow")
def grow(run, gpus, **options) -> None:
    """Add --gpus K tasks to RUN while it runs, on any partition or profile: they take their items from the
    run's tasks (stealing), and the run's collector waits for them too. Refused once RUN is not running."""
    from hpc_marker.slurm.parse import fold_job_ids, index_ranges
    from hpc_marker.submission.grow import grow_run
    from hpc_marker.submission.overrides import ResumeOverrides

    if gpus is None:
        raise click.UsageError("Missing option '--gpus'.")
    paths = run_paths(run)
    grown = grow_run(paths, gpus, ResumeOverrides(**options))
    click.echo(
        f"run {paths.run_id}: round {grown.round} grew by tasks {index_ranges(list(grown.tasks))} as "
        f"{', '.join(fold_job_ids(list(grown.jobs)))}; its collector waits for them too"
    )


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
