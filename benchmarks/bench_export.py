"""Benchmark: `hpcmarker export` time and peak memory at 10^4, 10^5 and 10^6 documents.

    .venv/bin/python benchmarks/bench_export.py [--documents 10000 100000 1000000] [--formats parquet jsonl]
                                                [--text-bytes 2000] [--work DIR] [--keep]

Each size is a synthetic finished run (tests/export/synthetic_export.py: 16 task manifests, a split
PDF every 50 documents, a failed one every 97, a retried one every 31, and each ok document's
Markdown and _meta.json on disk). The export runs in a child process, which reports its wall time
and its own peak resident memory (ru_maxrss); a child that only imports the package gives the
baseline. Results go to docs/export-benchmark.md and docs/export-benchmark.json.
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
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "export"))

from synthetic_export import Expected, make_export_run  # noqa: E402

from hpc_marker.runstate.layout import RUNS_SUBDIR, RunPaths  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
from hpc_marker.runstate.layout import RunPaths
import hpc_marker.export  # noqa: F401  (pyarrow, numpy: the baseline imports what the export imports)
start = time.perf_counter()
rows = shards = 0
if sys.argv[1] != "baseline":
    from hpc_marker.export import export_run
    result = export_run(RunPaths(Path(sys.argv[1])), Path(sys.argv[2]), sys.argv[3], rows_per_shard=100_000,
                        shard_bytes=512 << 20)
    rows, shards = result.rows, len(result.shards)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows, "shards": shards,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(*args: str) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def reuse_or_make(root: Path, documents: int, text_bytes: int) -> tuple[RunPaths, Expected]:
    """The synthetic run at `root`: made (and its expected counts saved beside it), or reused when a
    previous --keep left it there whole."""
    saved = root / "expected.json"
    if saved.is_file():
        return RunPaths(root / "out" / RUNS_SUBDIR / "synthetic"), Expected(**json.loads(saved.read_text()))
    paths, expected = make_export_run(root, documents, text_bytes=text_bytes)
    saved.write_text(json.dumps(asdict(expected)))
    return paths, expected


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", default=["parquet", "jsonl"])
    parser.add_argument("--text-bytes", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=None, help="where the synthetic runs go (default: a temp dir)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the synthetic runs in --work, and reuse those a previous --keep left there",
    )
    args = parser.parse_args(argv)
    work = (
        Path(args.work)
        if args.keep and args.work
        else Path(tempfile.mkdtemp(prefix="hpcmarker-export-", dir=args.work))
    )
    baseline = child("baseline")
    results = []
    print(f"baseline (imports only): {baseline['peak_mb']:.0f} MB")
    print("documents  lines      format   rows       shards  export s  rows/s    peak MB  output MB  (generate s)")
    for documents in args.documents:
        root = work / f"run-{documents}"
        start = time.perf_counter()
        paths, expected = reuse_or_make(root, documents, args.text_bytes)
        generated = time.perf_counter() - start
        lines = sum(1 for p in paths.manifests.glob("*.jsonl") for _ in p.open("rb"))
        for export_format in args.formats:
            target = root / f"export-{export_format}"
            measured = child(str(paths.root), str(target), export_format)
            assert measured["rows"] == expected.ok, (measured, expected)
            row = dict(
                documents=documents,
                manifest_lines=lines,
                format=export_format,
                rows=measured["rows"],
                shards=measured["shards"],
                seconds=round(measured["seconds"], 2),
                rows_per_second=round(measured["rows"] / measured["seconds"]),
                peak_mb=round(measured["peak_mb"], 1),
                output_mb=round(folder_mb(target), 1),
                generate_seconds=round(generated, 1),
            )
            results.append(row)
            print(
                f"{documents:<10} {lines:<10} {export_format:<8} {row['rows']:<10} {row['shards']:<7} "
                f"{row['seconds']:<9} {row['rows_per_second']:<9} {row['peak_mb']:<8} {row['output_mb']:<10} "
                f"({generated:.0f})",
                flush=True,
            )
            shutil.rmtree(target)
        if not args.keep:
            shutil.rmtree(root)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    write_docs(results, baseline, args.text_bytes)


def write_docs(results: list[dict], baseline: dict, text_bytes: int) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (ROOT / "docs" / "export-benchmark.json").write_text(
        json.dumps(
            {
                "written": stamp,
                "machine": machine,
                "baseline_peak_mb": round(baseline["peak_mb"], 1),
                "text_bytes": text_bytes,
                "results": results,
            },
            indent=1,
        )
        + "\n"
    )
    lines = [
        "# Export benchmark",
        "",
        f"Written by `benchmarks/bench_export.py` on {stamp}, {machine}, on a shared machine (other work ran "
        "beside it: times are indicative). Synthetic finished runs (tests/export/synthetic_export.py), not real "
        f"conversions: about {text_bytes} bytes of Markdown per document, 16 task manifests, a split PDF every "
        "50 documents, a failure every 97, a retried item every 31; the export reads every document's Markdown "
        "and `_meta.json` from disk.",
        "",
        f"Peak memory is the export process's own peak resident set (ru_maxrss); a process that only imports "
        f"hpc_marker.export (pyarrow, numpy) peaks at {baseline['peak_mb']:.0f} MB. `export s` excludes that import.",
        "",
        "| documents | manifest lines | format | rows | shards | export s | rows/s | peak MB | output MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['documents']:,} | {r['manifest_lines']:,} | {r['format']} | {r['rows']:,} | {r['shards']} | "
        f"{r['seconds']} | {r['rows_per_second']:,} | {r['peak_mb']} | {r['output_mb']} |"
        for r in results
    ]
    (ROOT / "docs" / "export-benchmark.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
