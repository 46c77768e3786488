"""A run's outputs: `collect` (manifest.csv, summary.json by hand), `report` (report.html) and `export`
(the run's documents as one dataset)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hpc_marker.cli.group import InputError, run_paths
from hpc_marker.runstate.permissions import PERMISSIONS
from hpc_marker.util.memory import ask_arrow_pool
from hpc_marker.util.text import plural

EXIT_NO_ROWS = 3  # export: the run has documents, but none was written (as status: finished, items failed)


@click.command()
@click.argument("run", required=False)
def collect(run) -> None:
    """Merge RUN's manifests and logs by hand (the collector job does the same)."""
    ask_arrow_pool()  # as the collector job's call does, before pyarrow is imported (util/memory.py)
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
