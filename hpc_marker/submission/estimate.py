"""`hpcmarker estimate`: what a run of a folder would take before it is submitted (wall time, GPU-hours, cost).

The folder's pages come from the scan (with the user's page-count cache), the rate from earlier finished runs
made the same way (planning/rates.py, recorded by their collectors). Without a rate it says so, and the command
that gets one. `submit` prints the estimate's one line (`submit_line`) when a rate is known.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.planning.plan import task_count
from hpc_marker.planning.rates import Prediction, Rate, predict, rate_key, read_rates, smallest_gpus
from hpc_marker.util.commands import command_line
from hpc_marker.util.text import plural

logger = logging.getLogger(__name__)

CALIBRATION_PDFS = 20  # PDFs of the folder a calibration run converts (the command printed without a rate)


@dataclass(frozen=True)
class EstimateRequest:
    pdfs: Path
    gpus: int
    engine: str
    engine_options: dict
    llm_model: str | None = None
    price: float | None = None
    deadline_s: float | None = None
    min_task_pages: int = 1


@dataclass(frozen=True)
class Estimate:
    request: EstimateRequest
    documents: int
    pages: int
    tasks: int  # what --gpus gives for these pages (--min-task-pages)
    key: str
    rate: Rate | None
    prediction: Prediction | None
    deadline_gpus: int | None = None  # the fewest GPUs that meet --deadline (None: none, or not asked)

    def to_json(self) -> dict:
        p = self.prediction
        return {
            "pdfs": str(self.request.pdfs),
            "documents": self.documents,
            "pages": self.pages,
            "gpus": self.request.gpus,
            "tasks": self.tasks,
            "wall_seconds": p.wall_seconds if p else None,
            "gpu_hours": p.gpu_hours if p else None,
            "cost": p.cost if p else None,
            "gpu_hour_price": self.request.price,
            "rate_pages_per_gpu_second": p.rate_pages_per_gpu_second if p else None,
            "startup_seconds": p.startup_seconds if p else None,
            "rate_source": self.source,
            "rate_key": self.key,
            "rate_pages": self.rate.pages if self.rate else None,
            "rate_runs": self.rate.runs if self.rate else None,
            "deadline_seconds": self.request.deadline_s,
            "deadline_gpus": self.deadline_gpus,
        }

    @property
    def source(self) -> str | None:
        if self.rate is None:
            return None
        return f"{plural(self.rate.runs, 'earlier run')} ({self.rate.pages:,} pages)"

    def line(self) -> str:
        """The estimate in one line (or why there is none, and how to get a rate)."""
        if self.prediction is None:
            return f"estimate: no rate yet for {self.key}; {no_rate_hint(self.request)}"
        p = self.prediction
        cost = f", cost {p.cost:,.2f}" if p.cost is not None else ""
        fewer = (
            f" (of --gpus {self.request.gpus}: a task per document at most, each with "
            f"--min-task-pages {self.request.min_task_pages} or more)"
            if self.tasks < self.request.gpus
            else ""
        )
        return (
            f"estimate: {plural(self.pages, 'page')} on {plural(self.tasks, 'GPU')}{fewer}: {duration(p.wall_seconds)} "
            f"without queue wait, {hours(p.gpu_hours)} GPU-hours{cost} (rate {p.rate_pages_per_gpu_second:.3g} "
            f"pages/GPU-second from {self.source})"
        )

    def deadline_line(self) -> str | None:
        if self.request.deadline_s is None or self.rate is None:
            return None
        if self.deadline_gpus is None:
            return f"deadline {duration(self.request.deadline_s)}: no number of GPUs meets it at this rate"
        fit = predict(self.rate, self.pages, self.deadline_gpus, self.request.price)
        return (
            f"deadline {duration(self.request.deadline_s)}: --gpus {self.deadline_gpus} "
            f"({duration(fit.wall_seconds)}, {hours(fit.gpu_hours)} GPU-hours)"
        )


def hours(value: float) -> str:
    return f"{value:,.2f}" if value >= 1 else f"{value:.2g}"


def duration(seconds: float) -> str:
    """12h 5m, 3m 20s, 45s."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def no_rate_hint(request: EstimateRequest) -> str:
    """How to get a rate: a short run of a sample of the folder's PDFs, made the same way (its collector records
    the rate); a command that runs as printed."""
    options = request.engine_options
    argv = ["submit", "--pdfs", "SAMPLE", "--out", "OUT", "--gpus", "1", "--engine", request.engine]
    argv += ["--output-format", str(options.get("output_format", "markdown"))]
    argv += [
        *(["--force-ocr", "auto"] if options.get("ocr_auto") else ["--force-ocr"] if options.get("force_ocr") else []),
        *([] if options.get("images", True) else ["--no-images"]),
    ]
    argv += ["--llm", request.llm_model] if request.llm_model else []
    sample = shlex.join(["find", str(request.pdfs), "-iname", "*.pdf"])
    submit = command_line(*argv).replace("SAMPLE", "~/hpcmarker-sample").replace("OUT", "~/hpcmarker-sample-out")
    return (
        f"convert a sample made the same way, and its run records one: mkdir -p ~/hpcmarker-sample && {sample} | "
        f"head -n {CALIBRATION_PDFS} | xargs -d '\\n' cp -t ~/hpcmarker-sample && {submit}"
    )


def estimate(
    request: EstimateRequest,
    scan_workers: int | None = None,
    progress: bool = False,
    calibrate: int | None = None,
    executor: str = "auto",
) -> Estimate:
    """Scan the folder (page-count cache) and predict its run at the rate recorded for its key; with `calibrate`
    K, first convert K of its PDFs as a short run (`calibration_run`), whose collector records the rate."""
    from hpc_marker.planning.scan import ScanError, scan_pdfs
    from hpc_marker.submission.request import LaunchError

    try:
        scanned = scan_pdfs(request.pdfs, scan_workers, cache=True, progress=progress)
    except ScanError as exc:
        raise LaunchError(f"--pdfs {exc}") from None
    readable = sorted(pdf.relpath for pdf in scanned if not pdf.error)
    if calibrate:
        calibration_run(request, readable[:: max(1, len(readable) // calibrate)][:calibrate], executor)
    pages = sum(pdf.pages for pdf in scanned if not pdf.error)
    return estimate_pages(request, len(scanned), pages)


CALIBRATION_POLL_S = 2.0


def calibration_run(request: EstimateRequest, sample: list[str], executor: str) -> None:
    """Convert `sample` (PDFs of the folder, spread through it) on one GPU, made as the request asks, into a
    folder of the user's cache, and wait until its collector has recorded the rate (a local run waits itself;
    a Slurm run is watched until none of its jobs is left)."""
    import time

    from hpc_marker.engines.base import EngineOptions
    from hpc_marker.executors import executor_for
    from hpc_marker.planning.scancache import cache_home
    from hpc_marker.submission.launch import prepare_run, submit_run
    from hpc_marker.submission.request import LaunchError, SubmitRequest

    if request.llm_model:
        raise LaunchError("--calibrate: not with --llm (its service's start-up would be the sample's rate)")
    run_id = f"calibration-{time.strftime('%Y%m%d-%H%M%S')}"
    submit = SubmitRequest.with_defaults(
        pdfs=request.pdfs,
        out=cache_home() / "calibration" / run_id,
        engine=request.engine,
        gpus=1,
        executor=executor,
        run_id=run_id,
        only=tuple(sample),
        engine_options=EngineOptions.from_json(request.engine_options),
    )
    record = submit_run(prepare_run(submit))
    logger.info(f"calibration run {run_id}: {plural(len(sample), 'PDF')} ({record.executor})")
    jobs = executor_for(record.executor)
    while not jobs.waits and jobs.active(record):
        time.sleep(CALIBRATION_POLL_S)


def estimate_pages(request: EstimateRequest, documents: int, pages: int) -> Estimate:
    """The estimate of `pages` in `documents` at the recorded rate (none: an Estimate without a prediction)."""
    key = rate_key(request.engine, request.engine_options, request.llm_model)
    rate = read_rates().get(key)
    tasks = min(task_count(pages, request.gpus, request.min_task_pages), max(1, documents))
    if rate is None or rate.pages_per_gpu_second <= 0:
        return Estimate(request, documents, pages, tasks, key, None, None)
    fewest = None
    if request.deadline_s is not None:
        fewest = smallest_gpus(rate, pages, request.deadline_s)
        most = task_count(pages, max(1, pages), request.min_task_pages)  # more GPUs than this get no work
        fewest = fewest if fewest is not None and fewest <= most else None
    return Estimate(request, documents, pages, tasks, key, rate, predict(rate, pages, tasks, request.price), fewest)


def submit_line(record, documents: int, pages: int) -> str | None:
    """The estimate's one line for a run about to be submitted (a runstate RunRecord), when a rate is known."""
    from hpc_marker.planning.rates import configured_price

    request = EstimateRequest(
        Path("."),
        record.tasks,
        record.engine,
        record.engine_options.to_json(),
        record.llm.model if record.llm else None,
        configured_price(record.profile),
    )
    found = estimate_pages(request, documents, pages)
    return found.line() if found.prediction is not None else None
