"""Watching a run after submission: `status` (where it stands, why it stopped, what to do next) and `logs`."""

from __future__ import annotations

import json

import click
from rich.console import Console

from hpc_marker.cli.group import run_paths
from hpc_marker.config.types import PRICE


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
@click.option(
    "--price",
    type=PRICE,
    metavar="P",
    help="What one GPU-hour costs (default: the run's "
    "profile's gpu_hour_price): the run's cost and its cost per 10^6 pages.",
)
def status(run, as_json, watch, interval, cancel_wedged, price) -> None:
    """Where RUN (default: the latest; a run id, its folder, or the --out folder) stands: per task state and
    progress, rate, ETA; why it stopped and what to do next.

    Exit code: 0 while the run goes on, or finished with every item ok; 3 finished, but some items
    failed; 4 incomplete (items left, nothing running) or wedged; 130 when --watch is left with Ctrl-C."""
    from hpc_marker.manage.accounting import account_status, cost_lines
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
    result.cost = account_status(paths, result, price)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    else:
        if not watch:  # --watch left its last table on the screen
            Console().print(status_table(result))
        for line in [*cost_lines(result.cost), *verdict_lines(result)]:
            click.echo(line)
    if result.wedged:
        click.echo(result.wedged, err=as_json)
    if result.exit_code:
        raise SystemExit(result.exit_code)


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
