"""Benchmark: scan speed, plan balance and end-to-end wall time on the shared corpus.

    .venv/bin/python benchmarks/bench_pipeline.py [--corpus DIR] [--repeat 5] [--skip-slurm]

Scan: PDFs/s and pages/s for find + page count (pypdfium2), best of --repeat.
Plan: busiest task's pages / (total pages / GPUs) for hpcmarker's page-aware plan and for
marker's static chunking (ceil(files/chunks) in listing order), at 4, 8 and 16 GPUs.
End to end: `hpcmarker submit --engine text` of the whole corpus, from the command to the
collector's summary, on the local Slurm cluster (4 GPUs) when one answers and with the local
executor (2 tasks).
Makespan (Slurm only): the `benchmark` engine (a fixed cost per page) on the whole corpus at
4 GPUs, hpcmarker (page-aware plan, split PDFs, work stealing) against marker-style static
chunking, on the same cluster in the same run, once with all tasks starting together and once
with 2 of the 4 GPUs held by another job for the first LATE_S seconds (tasks started late).
Results go to docs/benchmarks.md and docs/benchmarks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hpc_marker.planning.plan import make_plan, static_chunks, work_items  # noqa: E402
from hpc_marker.planning.scan import scan_pdfs  # noqa: E402


def bench_scan(corpus: Path, repeat: int) -> dict:
    results = {}
    for label, workers in (("serial", 1), ("default", min(8, os.cpu_count() or 1))):
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            scanned = scan_pdfs(corpus, workers=workers)
            best = min(best, time.perf_counter() - start)
        pages = sum(s.pages for s in scanned)
        results[label] = {
            "pdfs": len(scanned),
            "pages": pages,
            "seconds": round(best, 4),
            "pdfs_per_s": round(len(scanned) / best, 1),
            "pages_per_s": round(pages / best, 1),
        }
    return results


def bench_plan(corpus: Path) -> list[dict]:
    items = work_items(scan_pdfs(corpus))
    rows = []
    for gpus in (4, 8, 16):
        rows.append(
            {
                "gpus": gpus,
                "hpcmarker": round(make_plan(items, gpus).imbalance(gpus), 3),
                "marker_static": round(static_chunks(items, gpus).imbalance(gpus), 3),
                "largest_pdf_bound": round(max(i.pages for i in items) / (sum(i.pages for i in items) / gpus), 3),
            }
        )
    return rows


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "hpcmarker"), *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode not in (0, 3):  # 3: a local run finished with some items failed (status's exit codes)
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done


def _wait_for_summary(path: Path, start: float, limit_s: float = 1800) -> tuple[dict, float]:
    """Wait for the collector's summary.json; returns it and the seconds since `start`."""
    while not path.exists():
        if time.perf_counter() - start > limit_s:
            raise TimeoutError(f"run did not finish in {limit_s:.0f} s")
        time.sleep(0.25)
    return json.loads(path.read_text()), time.perf_counter() - start


def bench_end_to_end(corpus: Path, executor: str, gpus: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HPCMARKER_STATE_DIR=str(Path(tmp) / "state"))
        out = Path(tmp) / "out"
        start = time.perf_counter()
        _cli(
            "submit",
            "--pdfs",
            str(corpus),
            "--out",
            str(out),
            "--gpus",
            str(gpus),
            "--engine",
            "text",
            "--cpus-per-task",
            "1",
            "--time",
            "30",
            "--executor",
            executor,
            "--run-id",
            "bench",
            "--min-task-pages",
            "1",
            env=env,
        )
        summary, wall = _wait_for_summary(out / ".hpcmarker" / "runs" / "bench" / "summary.json", start)
        return {
            "executor": executor,
            "gpus": gpus,
            "wall_seconds": round(wall, 2),
            "conversion_seconds": summary["wall_seconds"],
            "ok": summary["ok"],
            "failed": summary["failed"],
            "pages": summary["pages_ok"],
            "pages_per_s_end_to_end": round(summary["pages_ok"] / wall, 1),
            "task_wall_seconds": [t["wall_seconds"] for t in summary["tasks"]],
        }


SECONDS_PER_PAGE = 0.04
LATE_S = 10


def bench_makespan(corpus: Path, strategy: str, late: bool, gpus: int = 4) -> dict:
    """Wall time of one benchmark-engine run; `late`: 2 GPUs busy for LATE_S s at submission."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            HPCMARKER_STATE_DIR=str(Path(tmp) / "state"),
            HPCMARKER_BENCH_SECONDS_PER_PAGE=str(SECONDS_PER_PAGE),
        )
        out = Path(tmp) / "out"
        if late:
            subprocess.run(
                ["sbatch", "--gres=gpu:2", "--cpus-per-task=1", "--output=/dev/null", f"--wrap=sleep {LATE_S}"],
                check=True,
                capture_output=True,
            )
            time.sleep(1)  # let the blocker start first
        start = time.perf_counter()
        _cli(
            "submit",
            "--pdfs",
            str(corpus),
            "--out",
            str(out),
            "--gpus",
            str(gpus),
            "--engine",
            "benchmark",
            "--cpus-per-task",
            "1",
            "--time",
            "30",
            "--plan-strategy",
            strategy,
            "--run-id",
            "mk",
            "--min-task-pages",
            "1",
            env=env,
        )
        summary, wall = _wait_for_summary(out / ".hpcmarker" / "runs" / "mk" / "summary.json", start)
        pages = summary["pages_ok"]
        busy = (LATE_S - 1) * 2 if late else 0  # GPU-seconds the blocker took from the run
        return {
            "strategy": strategy,
            "late_start": late,
            "wall_seconds": round(wall, 2),
            "conversion_seconds": summary["wall_seconds"],
            "documents_ok": summary["documents_ok"],
            "ideal_seconds": round((pages * SECONDS_PER_PAGE + busy) / gpus, 2),
            "task_wall_seconds": [t["wall_seconds"] for t in summary["tasks"]],
        }


def slurm_answers() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


def write_report(results: dict, docs: Path) -> None:
    docs.mkdir(exist_ok=True)
    (docs / "benchmarks.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `benchmarks/bench_pipeline.py` on {results['when']}, "
        f"{results['machine']}. Corpus: `{results['corpus']}`.",
        "",
        "## Scan (find + page count)",
        "",
        "| mode | PDFs | pages | seconds (best) | PDFs/s | pages/s |",
        "|---|---|---|---|---|---|",
    ]
    for mode, r in results["scan"].items():
        lines.append(
            f"| {mode} | {r['pdfs']} | {r['pages']} | {r['seconds']} | {r['pdfs_per_s']} | {r['pages_per_s']} |"
        )
    lines += [
        "",
        "## Plan balance (busiest task's pages / ideal share; 1.0 is perfect)",
        "",
        "| GPUs | hpcmarker (page-aware) | marker static chunks | bound set by the largest PDF |",
        "|---|---|---|---|",
    ]
    for r in results["plan"]:
        lines.append(f"| {r['gpus']} | {r['hpcmarker']} | {r['marker_static']} | {r['largest_pdf_bound']} |")
    lines += [
        "",
        "Static chunking of 57 PDFs at 16 GPUs makes only 15 chunks (4 files each), leaving a GPU idle; "
        "ratios are against the GPUs asked for. The scan's default mode uses a process pool from 64 PDFs up, "
        "so on this 57-PDF corpus both rows are serial.",
        "",
        "Whole-PDF plans cannot go below the largest PDF's share; splitting large PDFs into "
        "page ranges is what removes that bound.",
        "",
        "## End to end (`--engine text`, whole corpus)",
        "",
        "| executor | tasks | wall s (submit to summary) | conversion s | ok | failed | pages "
        "| pages/s end to end | per-task wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["end_to_end"]:
        lines.append(
            f"| {r['executor']} | {r['gpus']} | {r['wall_seconds']} | {r['conversion_seconds']} | {r['ok']} | "
            f"{r['failed']} | {r['pages']} | {r['pages_per_s_end_to_end']} | {r['task_wall_seconds']} |"
        )
    if results.get("makespan"):
        lines += [
            "",
            f"## Makespan: hpcmarker against static chunking (`benchmark` engine, {SECONDS_PER_PAGE} s/page, "
            "4 GPUs, Slurm)",
            "",
            "| strategy | tasks started late | wall s (submit to summary) | conversion s | ideal s | "
            "wall / ideal | per-task wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["makespan"]:
            lines.append(
                f"| {r['strategy']} | {'2 of 4, by ' + str(LATE_S) + ' s' if r['late_start'] else 'no'} | "
                f"{r['wall_seconds']} | {r['conversion_seconds']} | {r['ideal_seconds']} | "
                f"{round(r['conversion_seconds'] / r['ideal_seconds'], 2)} | {r['task_wall_seconds']} |"
            )
        by = {(r["strategy"], r["late_start"]): r["conversion_seconds"] for r in results["makespan"]}
        for late in (False, True):
            if ("static", late) in by and ("pages", late) in by:
                lines.append(
                    f"\nStatic chunking takes {by[('static', late)] / by[('pages', late)]:.2f}x hpcmarker's "
                    f"conversion time {'with tasks started late' if late else 'with all tasks starting together'}."
                )
        lines += [
            "",
            "`ideal` is total cost / GPUs (plus the GPU-seconds the blocker job held); `conversion s` runs from "
            "the first item's start to the last item's end, so it excludes Slurm's scheduling latency.",
        ]
    lines += [
        "",
        "The test cluster runs on a 2-core machine with 8 declared CPUs and 4 fake GPUs, so 4 tasks share "
        "2 real cores: these figures measure hpcmarker's overhead and balance, not GPU speed.",
    ]
    (docs / "benchmarks.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "pdfs")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-slurm", action="store_true")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "corpus": str(args.corpus),
        "scan": bench_scan(args.corpus, args.repeat),
        "plan": bench_plan(args.corpus),
        "end_to_end": [],
    }
    if not args.skip_slurm and slurm_answers():
        results["end_to_end"].append(bench_end_to_end(args.corpus, "slurm", 4))
        results["makespan"] = [
            bench_makespan(args.corpus, strategy, late) for late in (False, True) for strategy in ("static", "pages")
        ]
    results["end_to_end"].append(bench_end_to_end(args.corpus, "local", 2))
    write_report(results, args.docs)
    print((args.docs / "benchmarks.md").read_text())


if __name__ == "__main__":
    main()
