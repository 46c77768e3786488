"""Many tasks starting at once on a Slurm cluster: how --start-jitter spreads their starts, and whether the
compile-cache lock keeps their vLLM compiles apart (issue 24, item 4).

Each task of a `text` run gets a per-task inference server as marker 2.x's tasks do: the stand-in `vllm`
(tests/standin), which logs the moment it starts (STANDIN_VLLM_START_LOG) and "compiles" into the run's cache
folder (VLLM_CACHE_ROOT) for --compile-s seconds, marking the cache CORRUPT when two compiles overlap. The jobs
run this script's Python, which must import marker-pdf 2.x (a task starts its server only for marker 2.x):

    SLURM_CONF=/var/tmp/hpcmarker-slurm/slurm.conf PYTHONPATH=. \\
        /var/tmp/hpcmarker-venvs/marker-2.0.0/bin/python benchmarks/start_herd.py --tasks 64 --jitter 0 auto

Tasks ask for no GPU and one CPU (a profile `herd` in a config of the benchmark's own), so that as many run at
once as the cluster has CPUs. Per run: each task's logged delay, the server starts per second, how many compiles
ran and whether any overlapped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
STANDIN = ROOT / "tests" / "standin"
CONFIG = '[submit]\nmin_task_pages = 1\nmax_rounds = 1\n\n[profiles.herd]\ntemplate = "generic"\ngres = "gpu:0"\n'
DELAY = re.compile(r"task (\d+): start-up jitter: waiting ([\d.]+) s")


def environment(workdir: Path) -> None:
    """What the jobs inherit (sbatch passes the environment on): the stand-ins first on PATH, the config."""
    config = workdir / "config" / "hpcmarker"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text(CONFIG)
    os.environ.update(
        PATH=f"{STANDIN}{os.pathsep}{os.environ['PATH']}",
        XDG_CONFIG_HOME=str(workdir / "config"),
        HPCMARKER_STATE_DIR=str(workdir / "state"),
        HPCMARKER_IDLE_POLL_S="0.5",
        VLLM_GPU_TYPE="h100",  # no nvidia-smi on the test cluster's node
        PYTHONPATH=str(ROOT),
    )


def submit(pdfs: Path, workdir: Path, tasks: int, jitter: str, compile_s: float) -> tuple[str, Path, Path]:
    """Submit the run (its record asking for a native per-task server); (run id, run folder, start log)."""
    from hpc_marker.servers.vllm import InferenceSettings
    from hpc_marker.submission.launch import prepare_run, submit_run
    from hpc_marker.submission.request import SubmitRequest

    run_id = f"herd-{jitter}-{secrets.token_hex(2)}"
    starts = workdir / f"starts-{run_id}.txt"
    os.environ.update(
        VLLM_CACHE_ROOT=str(workdir / f"cache-{run_id}"),
        STANDIN_VLLM_START_LOG=str(starts),
        STANDIN_VLLM_COMPILE_S=str(compile_s),
    )
    request = SubmitRequest.with_defaults(
        pdfs, workdir / f"out-{run_id}", gpus=tasks, engine="text", executor="slurm", profile="herd",
        cpus_per_task=1, time_limit="20", run_id=run_id, start_jitter=jitter, split_pages=0, workers_per_gpu=1,
    )  # fmt: skip
    prepared = prepare_run(request)
    prepared.record.inference = InferenceSettings(mode="native", startup_timeout_s=600.0)
    prepared.paths.save_record(prepared.record)
    submit_run(prepared)
    return run_id, prepared.paths.root, starts


def wait(run_id: str, timeout_s: float = 1800) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        out = subprocess.run(
            [sys.executable, "-m", "hpc_marker", "status", run_id, "--json"], capture_output=True, text=True
        )
        status = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
        if status.get("state") in ("finished", "incomplete", "failed", "cancelled"):
            return status
        time.sleep(2)
    raise SystemExit(f"run {run_id} not over after {timeout_s:g} s")


def measure(run_dir: Path, starts: Path, cache: Path, tasks: int) -> dict:
    """The delays the tasks logged, the servers' starts per second, the compiles and their overlaps."""
    text = "\n".join(p.read_text(errors="replace") for p in (run_dir / "jobs").rglob("*.out"))  # the jobs' logs
    delays = {int(task): float(seconds) for task, seconds in DELAY.findall(text)}
    moments = sorted(float(line.split()[0]) for line in starts.read_text().splitlines() if line.strip())
    busiest = max((sum(1 for m in moments if t <= m < t + 1.0) for t in moments), default=0)
    compile_dir = cache / "standin-compile"
    compiled = (compile_dir / "compiled").read_text().split() if (compile_dir / "compiled").exists() else []
    corrupt = sorted(p.name for p in compile_dir.glob("CORRUPT-*")) if compile_dir.exists() else []
    ordered = sorted(delays.values())
    return {
        "tasks": tasks,
        "delays_logged": len(delays),
        "delay_min_s": ordered[0] if ordered else 0.0,
        "delay_median_s": ordered[len(ordered) // 2] if ordered else 0.0,
        "delay_max_s": ordered[-1] if ordered else 0.0,
        "server_starts": len(moments),
        "starts_spread_s": round(moments[-1] - moments[0], 1) if moments else 0.0,
        "most_starts_in_1s": busiest,
        "compiles": len(compiled),
        "corrupt_marks": len(corrupt),
        "waited_for_lock": text.count("another task compiles into it"),
        "lock_holders": text.count("holding its lock for this first start"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--jitter", nargs="+", default=["0", "auto"])
    parser.add_argument("--compile-s", type=float, default=3.0)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/hpcmarker-herd"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from smallpdfs import make_small_pdfs

    from hpc_marker.config.types import parse_start_jitter

    args.workdir.mkdir(parents=True, exist_ok=True)
    environment(args.workdir)
    pdfs = args.workdir / f"pdfs-{args.tasks}"
    make_small_pdfs(args.tasks, pdfs, max_pages=1)
    results = []
    for jitter in args.jitter:
        began = time.time()
        run_id, run_dir, starts = submit(pdfs, args.workdir, args.tasks, jitter, args.compile_s)
        status = wait(run_id)
        row = measure(run_dir, starts, args.workdir / f"cache-{run_id}", args.tasks)
        row.update(jitter=jitter, jitter_s=parse_start_jitter(jitter, args.tasks), state=status.get("state"),
                   wall_s=round(time.time() - began, 1), run_id=run_id)  # fmt: skip
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
