"""Count the syscalls a local run makes on its run folder, per work item (issue 12's metric).

A whole local run (`hpcmarker submit --executor local --engine benchmark`, 0 s per page: real PDFs,
real text extraction, real claims, commits, manifests and collector) runs under `strace -f -y`.
Two counts per work item:
- `path`: syscalls with a path argument inside the run folder (open, stat, link, unlink, rename,
  mkdir, utime, ...): each is a lookup or a change at the metadata server. This is issue 12's metric.
- `all`: every traced syscall whose line names the run folder, file descriptors decoded by -y
  (adds getdents, read, write, lseek, fsync, close on files of the run folder).
Traced: %file, %desc, fsync, fdatasync.

    python benchmarks/runfolder_syscalls.py PDF_DIR --tasks 1 4 16 [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TRACE = "%file,%desc,fsync,fdatasync"
CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?([a-z_0-9]+)\(")


def traced_run(pdfs: Path, tasks: int, workdir: Path, extra: list[str]) -> dict:
    out = workdir / f"out-{tasks}"
    shutil.rmtree(out, ignore_errors=True)
    trace = workdir / f"trace-{tasks}.txt"
    env = dict(
        os.environ,
        HPCMARKER_BENCH_SECONDS_PER_PAGE="0",
        HPCMARKER_STATE_DIR=str(workdir / "state"),
        HPCMARKER_LOCAL_CORES=str(max(tasks, os.cpu_count() or 1)),
    )  # --gpus N is N tasks, whatever the cores
    run_id = f"sys-{tasks}"
    argv = [
        "strace",
        "-f",
        "-qq",
        "-y",
        "-e",
        f"trace={TRACE}",
        "-o",
        str(trace),
        sys.executable,
        "-m",
        "hpc_marker",
        "submit",
        "--pdfs",
        str(pdfs),
        "--out",
        str(out),
        "--gpus",
        str(tasks),
        "--engine",
        "benchmark",
        "--executor",
        "local",
        "--workers-per-gpu",
        "1",
        "--min-task-pages",
        "1",
        "--run-id",
        run_id,
        *extra,
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed: {done.stderr[-2000:]}")
    root = str((out / ".hpcmarker" / "runs" / run_id).resolve())
    summary = json.loads(Path(root, "summary.json").read_text())
    by_call: collections.Counter[str] = collections.Counter()
    by_folder: collections.Counter[str] = collections.Counter()
    path_calls: collections.Counter[str] = collections.Counter()
    path_folders: collections.Counter[str] = collections.Counter()
    quoted = f'"{root}'
    with open(trace, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if root not in line:
                continue
            if quoted in line:
                match = CALL.match(line)
                path_calls[match.group(1) if match else "?"] += 1
                folder = line.split(quoted, 1)[1].lstrip("/").split("/", 1)[0].split('"', 1)[0] or "."
                path_folders[folder if not folder.startswith(".") else "(temporary files)"] += 1
            match = CALL.match(line)
            name = match.group(1) if match else "?"
            by_call[name] += 1
            rest = line.split(root, 1)[1]
            sub = rest.lstrip("/").split("/", 1)[0].split(">", 1)[0].split('"', 1)[0] or "."
            by_folder[sub] += 1
    items = summary["items"]
    total = sum(by_call.values())
    trace.unlink()
    files = sum(len(f) for _, _, f in os.walk(root))
    paths = sum(path_calls.values())
    return {
        "tasks": tasks,
        "items": items,
        "ok": summary["ok"],
        "path_per_item": round(paths / items, 2),
        "path_calls_per_item": {k: round(v / items, 2) for k, v in path_calls.most_common(10)},
        "path_by_folder_per_item": {k: round(v / items, 2) for k, v in path_folders.most_common(10)},
        "all_per_item": round(total / items, 2),
        "by_folder_per_item": {k: round(v / items, 2) for k, v in by_folder.most_common()},
        "by_call_per_item": {k: round(v / items, 2) for k, v in by_call.most_common(12)},
        "files_in_run_folder": files,
        "files_per_item": round(files / items, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pdfs", type=Path)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="more submit options (after --)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpcm-syscalls-", dir="/var/tmp") as tmp:
        for tasks in args.tasks:
            row = traced_run(args.pdfs, tasks, Path(tmp), args.extra)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
