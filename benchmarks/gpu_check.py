"""The GPU proof (issue 24, item 5), run by benchmarks/gpu_check.sh: local runs on one GPU with 1, 2 and 4 workers,
`--mps off` and `on`, each worker doing real CUDA work per page (benchmarks/gpu_workload.py through the benchmark
engine), against a bare loop of the same work.

Per run: pages/s (all pages over the span from the first page begun to the last ended, start-up left out) and its
ratio to the bare loop; GPU memory per worker (torch's peak, and the most nvidia-smi listed for the process); and
whether each worker saw exactly the GPU it was given (CUDA_VISIBLE_DEVICES, one device, that GPU's UUID) and, with
MPS on, the task's MPS pipe. Writes OUT/gpu_check.json and prints a Markdown table; exit 1 when a check fails.

--dry-run: the same runs on the CPU (no GPU needed: GPU `--gpu` is only named, the stand-in MPS daemon of
tests/standin is on PATH, the workload runs small on the CPU), to prove the plumbing; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKLOAD = HERE / "gpu_workload.py"


def make_pdf(path: Path, pages: int) -> None:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(612, 792)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.save(str(path))


def gpu_uuid(gpu: str, dry_run: bool) -> str | None:
    if dry_run:
        return None
    out = subprocess.run(
        ["nvidia-smi", "-i", gpu, "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True, text=True
    )
    return out.stdout.strip() or None


class MemorySampler:
    """nvidia-smi's memory per compute process, every half second, while a run lasts (the most seen per pid)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.most, self._stop = enabled, {}, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MemorySampler:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def _loop(self) -> None:
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        while not self._stop.wait(0.5):
            out = subprocess.run(query, capture_output=True, text=True).stdout
            for line in out.splitlines():
                pid, _, used = line.partition(",")
                if pid.strip().isdigit() and used.strip().isdigit():
                    self.most[int(pid)] = max(self.most.get(int(pid), 0), int(used))


def run_env(args: argparse.Namespace, reports: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES=args.gpu,
        HPCMARKER_BENCH_SECONDS_PER_PAGE="0",
        HPCMARKER_BENCH_NULL="1",  # the PDF is not read: the workload is the only per-page work
        HPCMARKER_BENCH_WORKLOAD=str(WORKLOAD),
        GPU_CHECK_OUT=str(reports),
        HPCMARKER_STATE_DIR=str(args.out / "state"),
        XDG_CONFIG_HOME=str(args.out / "config"),  # the packaged defaults, not the user's
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    if args.dry_run:
        env.update(GPU_CHECK_DEVICE="cpu", PATH=f"{ROOT / 'tests' / 'standin'}{os.pathsep}{env['PATH']}")
    return env


def one_run(args: argparse.Namespace, pdfs: Path, workers: int, mps: str) -> dict:
    name = f"w{workers}-mps-{mps}"
    reports = args.out / name
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    argv = [args.python, "-m", "hpc_marker", "submit", "--pdfs", str(pdfs), "--out", str(args.out / f"md-{name}"),
            "--executor", "local", "--engine", "benchmark", "--gpus", "1", "--workers-per-gpu", str(workers),
            "--mps", mps, "--split-pages", str(args.item_pages), "--start-jitter", "0", "--force",
            "--run-id", f"{name}-{int(time.time())}"]  # fmt: skip
    with MemorySampler(not args.dry_run) as sampler:
        done = subprocess.run(argv, env=run_env(args, reports), capture_output=True, text=True)
    workers_seen = [json.loads(p.read_text()) for p in sorted(reports.glob("worker-*.json"))]
    return {"name": name, "workers": workers, "mps": mps, "exit": done.returncode, "tail": done.stderr[-2000:],
            "reports": workers_seen, "smi_mb": sampler.most}  # fmt: skip


def judge(run: dict, args: argparse.Namespace, uuid: str | None, bare: float) -> dict:
    """The run's figures and checks, from its workers' reports."""
    reports, problems = run["reports"], []
    if run["exit"] != 0:
        problems.append(f"submit exited {run['exit']}: {run['tail'].strip().splitlines()[-1:]}")
    pages = sum(r["pages"] for r in reports)
    if pages != args.pages:
        problems.append(f"{pages} pages worked of {args.pages}")
    for r in reports:
        if r["cuda_visible_devices"] != args.gpu:
            problems.append(f"worker {r['pid']} saw CUDA_VISIBLE_DEVICES={r['cuda_visible_devices']!r}")
        if not args.dry_run and (r["device_count"] != 1 or r["gpu_uuid"] != uuid):
            problems.append(f"worker {r['pid']} saw {r['device_count']} GPUs, device 0 {r['gpu_uuid']} (given {uuid})")
        if bool(r["mps_pipe"]) != (run["mps"] == "on"):
            problems.append(f"worker {r['pid']}: MPS pipe {r['mps_pipe']!r} with --mps {run['mps']}")
    span = max((r["last"] for r in reports), default=0) - min((r["first"] for r in reports), default=0)
    rate = pages / span if span > 0 else 0.0
    return {
        "run": run["name"],
        "workers": run["workers"],
        "mps": run["mps"],
        "workers_reporting": len(reports),
        "pages": pages,
        "pages_per_s": round(rate, 2),
        "vs_bare": round(rate / bare, 2) if bare else None,
        "torch_peak_mb": [r["peak_memory_mb"] for r in reports],
        "smi_mb": [run["smi_mb"].get(r["pid"]) for r in reports],
        "backend": sorted({r["backend"] for r in reports}),
        "problems": problems,
    }


def table(bare: dict, rows: list[dict]) -> str:
    lines = [
        "| run | pages/s | × bare loop | GPU memory per worker (torch peak / nvidia-smi, MB) | saw its GPU |",
        "|---|---|---|---|---|",
        f"| bare loop, 1 process | {bare['pages_per_s']:.2f} | 1.00 | | |",
    ]
    for row in rows:
        memory = ", ".join(f"{t} / {s}" for t, s in zip(row["torch_peak_mb"], row["smi_mb"], strict=True))
        seen = "yes" if not row["problems"] else "NO: " + "; ".join(row["problems"])
        lines.append(
            f"| {row['workers']} worker(s), --mps {row['mps']} | {row['pages_per_s']:.2f} | {row['vs_bare']} | "
            f"{memory} | {seen} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--gpu", default="0", help="the GPU's number (nvidia-smi's index)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--mps", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--pages", type=int, default=240)
    parser.add_argument("--item-pages", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(f"/tmp/gpu-check-{int(time.time())}"))
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config").mkdir(exist_ok=True)
    pdfs = args.out / "pdfs"
    make_pdf(pdfs / f"pages-{args.pages}.pdf", args.pages)
    env = run_env(args, args.out)
    env.pop("GPU_CHECK_OUT")
    bare_out = subprocess.run(
        [args.python, str(WORKLOAD), "--bare", "--pages", str(args.pages)], env=env, capture_output=True, text=True
    )
    if bare_out.returncode != 0:
        print(f"gpu_check: the bare loop failed: {bare_out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    bare = json.loads(bare_out.stdout.strip().splitlines()[-1])
    uuid = gpu_uuid(args.gpu, args.dry_run)
    rows = []
    for mps in args.mps:
        for workers in args.workers:
            rows.append(judge(one_run(args, pdfs, workers, mps), args, uuid, bare["pages_per_s"]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"dry_run": args.dry_run, "gpu": args.gpu, "gpu_uuid": uuid, "bare": bare, "runs": rows}
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(bare, rows))
    failed = [row["run"] for row in rows if row["problems"]]
    if failed:
        print(f"gpu_check: checks failed in {', '.join(failed)} (see {args.out / 'gpu_check.json'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
