"""`hpcmarker estimate`: wall time, GPU-hours, cost and pages of a folder's run, before it is submitted.

The submit options it shares (the folder, GPUs, engine and what changes the output) come from the option
schema (config/options.py), with their types, help and config defaults (`ESTIMATE_KEYS`); its own options are
here.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from hpc_marker.config.options import BY_NAME
from hpc_marker.config.types import COUNT, DURATION, PRICE, parse_duration
from hpc_marker.engines.base import EngineOptions

SHARED = (  # submit's options that estimate takes (config/__init__.py ESTIMATE_KEYS: their [submit] defaults)
    "pdfs",
    "gpus",
    "engine",
    "output_format",
    "force_ocr",
    "images",
    "llm_model",
    "profile",
    "min_task_pages",
    "scan_workers",
    "executor",
)


def shared_options(function: Callable) -> Callable:
    """The schema's options in SHARED, as submit reads them (flag, type, help)."""
    for name in reversed(SHARED):
        option = BY_NAME[name]
        kwargs = {"type": option.type, "metavar": option.metavar, "help": option.help, "required": option.required}
        if option.is_flag:
            kwargs = {"is_flag": True, "help": option.help}
        elif option.flag_value is not None:  # --force-ocr alone, or --force-ocr auto
            kwargs.update(is_flag=False, flag_value=option.flag_value, default=None)
        elif "/" in option.flag:
            kwargs = {"default": None, "help": option.help}
        function = click.option(option.flag, option.name, **kwargs)(function)
    return function


@click.command("estimate")
@shared_options
@click.option("--deadline", type=DURATION, help="Also answer the fewest --gpus that finish within it (12h, 90m, 2d).")
@click.option(
    "--price", type=PRICE, metavar="P", help="What one GPU-hour costs (default: the profile's gpu_hour_price)."
)
@click.option(
    "--calibrate",
    type=COUNT,
    metavar="K",
    help="First convert K of the folder's PDFs as a short run on one GPU (made the same way), to measure the rate.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def estimate_command(deadline, price, calibrate, as_json, **options) -> None:
    """Predict a run of PDFS: wall time (first task start to last task end, without queue wait), GPU-hours,
    cost and pages, at the rate earlier finished runs made the same way measured (kept in the user's cache
    folder by their collectors). Without such a rate it says so, and the command that gets one."""
    from hpc_marker.planning.rates import configured_price
    from hpc_marker.submission.estimate import EstimateRequest, estimate

    request = EstimateRequest(
        pdfs=options["pdfs"],
        gpus=options["gpus"] or 1,
        engine=options["engine"],
        engine_options={
            "output_format": options["output_format"],
            **EngineOptions.ocr_fields(options["force_ocr"]),
            "images": True if options["images"] is None else options["images"],
        },
        llm_model=options["llm_model"],
        price=price if price is not None else configured_price(options["profile"]),
        deadline_s=parse_duration(deadline) if deadline else None,
        min_task_pages=options["min_task_pages"] or 1,
    )
    result = estimate(request, options["scan_workers"], calibrate=calibrate, executor=options["executor"] or "auto")
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    click.echo(result.line())
    if (line := result.deadline_line()) is not None:
        click.echo(line)
