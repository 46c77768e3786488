"""Scale benchmark (issue 12): what a run costs the metadata server, and how big and fast the login
node's side stays, from 10^3 to 10^6 work items.

    python benchmarks/bench_scale.py syscalls --items 10000 --tasks 1 4 16 64 [--json F]
    python benchmarks/bench_scale.py login --items 1000000 --tasks 64 [--json F]
    python benchmarks/bench_scale.py plan --items 1000000 --tasks 64 [--before /work/main] [--json F]

`syscalls`: real task processes (runtime.task.run_task, one worker each) over N items, then the
collector, all under `strace -f`; every syscall with a path argument inside the run folder counts
(the metric of benchmarks/runfolder_syscalls.py, without the job runner's files). The items
are real: N hard links to one small real PDF (so outputs do not collide), converted by the
`benchmark` engine in its null mode (HPCMARKER_BENCH_NULL=1: it writes one line per page without
opening the PDF), since real conversion is not what is measured.

`login`: synthetic items (no PDF is read): the plan's time and memory, one task's share in
memory, a finished run's `collect` and `status` times and memory, and the report's size. The
manifests and commit logs are written as N tasks would have written them.

`plan`: the plan alone (issue 24), from the scan's result (N synthetic ScannedPdf, 1-5 pages) to the
balanced, batched plan (`make_plan(work_items(...))`): wall seconds and the memory it adds to its input
(peak RSS less the RSS before it began, so Arrow's allocations count too), then `save_plan`. With `--before
TREE`, the same in another checkout (today's code), run from that tree, in the same run.

`collect`: the collector alone on the synthetic finished run of `login` (issue 24): wall seconds and peak
RSS of its process; with `--before TREE`, first in that checkout, then here, on the same run folder, and
whether both wrote the same manifest.csv, summary.json and report.html (the times they were made aside).
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_PDF = ROOT / "examples" / "pdfs" / "en" / "upref.pdf"


def _python(code: str, env: dict | None = None, strace: Path | None = None, tree: Path = ROOT) -> dict:
    """Run `code` in a fresh Python (optionally under strace); wall seconds and that process's own peak RSS
    (MB, its VmHWM; RUSAGE_CHILDREN would give the largest of every child so far)."""
    peak = (  # VmHWM, not ru_maxrss: Linux carries the parent's peak (this process's: 0.7 GB at 10^6 items) into
        # the ru_maxrss of a child it spawns, across exec; VmHWM is the child's own address space's
        "import atexit, resource, sys\natexit.register(lambda: print('PEAK_RSS_KB', next(int(line.split()[1]) "
        "for line in open('/proc/self/status') if line.startswith('VmHWM:')), file=sys.stderr))\n"
        "atexit.register(lambda: print('CPU_S', sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), file=sys.stderr))\n"
    )
    argv = [sys.executable, "-c", peak + code]
    if strace is not None:
        argv = ["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(strace), *argv]
    started = time.monotonic()
    env = dict(os.environ, **(env or {}), **({"PYTHONPATH": str(tree)} if tree != ROOT else {}))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tree)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"failed:\n{done.stderr[-3000:]}")
    kb = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB ")]
    cpu = [float(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("CPU_S ")]
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu[-1], 2) if cpu else None,  # user + system: what the load on the machine moves least
        "peak_rss_mb": round(kb[-1] / 1024, 1) if kb else None,
        "stdout": done.stdout,
    }


def make_run(work: Path, items: int, tasks: int, *, pdfs: Path | None) -> Path:
    """A run folder (through prepare_run) whose plan is replaced by `items` items over `tasks` tasks."""
    from hpc_marker.planning.plan import WorkItem, make_plan
    from hpc_marker.planning.store import save_plan
    from hpc_marker.submission.launch import prepare_run
    from hpc_marker.submission.request import SubmitRequest

    tiny = work / "tiny"
    tiny.mkdir(parents=True, exist_ok=True)
    if not (tiny / "one.pdf").exists():
        shutil.copy(SAMPLE_PDF, tiny / "one.pdf")
    out = work / f"out-{items}-{tasks}"
    shutil.rmtree(out, ignore_errors=True)
    request = SubmitRequest.with_defaults(
        tiny, out, gpus=1, engine="benchmark", executor="local", workers_per_gpu=1, run_id="scale"
    )
    prepared = prepare_run(request)
    pages = 2
    plan_items = [
        WorkItem(
            item_id=f"{n:07d}",
            pdf=f"f{n // 1000:04d}/d{n:07d}.pdf",
            page_start=0,
            page_stop=pages,
            scan_status="ok",
            doc_id=f"{n:07d}",
        )
        for n in range(items)
    ]
    plan = make_plan(plan_items, tasks, split_pages=0)
    save_plan(plan, prepared.paths.plan)
    record = prepared.record
    record.tasks, record.gpus = len(plan.tasks), tasks
    if pdfs is not None:
        record.pdfs_root = str(pdfs)
    prepared.paths.save_record(record)
    return prepared.paths.root


def hard_links(work: Path, items: int) -> Path:
    """`items` names for one real PDF, a thousand to a folder (kept between runs)."""
    pdfs = work / f"links-{items}"
    marker = pdfs / ".complete"
    if marker.exists():
        return pdfs
    for n in range(items):
        path = pdfs / f"f{n // 1000:04d}" / f"d{n:07d}.pdf"
        if n % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.link(SAMPLE_PDF, path)
    marker.touch()
    return pdfs


def count_paths(trace: Path, root: Path) -> collections.Counter:
    quoted = f'"{root}'
    folders: collections.Counter = collections.Counter()
    with open(trace, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if quoted in line:
                folder = line.split(quoted, 1)[1].lstrip("/").split("/", 1)[0].split('"', 1)[0] or "."
                folders[folder if not folder.startswith(".") else "(temporary files)"] += 1
    return folders


def syscalls(work: Path, items: int, tasks: int) -> dict:
    pdfs = hard_links(work, items)
    root = make_run(work, items, tasks, pdfs=pdfs)
    env = {"HPCMARKER_BENCH_NULL": "1", "HPCMARKER_BENCH_SECONDS_PER_PAGE": "0"}
    code = (
        "import multiprocessing as mp, sys\n"
        "from hpc_marker.runtime.task import run_task\n"
        f"ps = [mp.get_context('spawn').Process(target=run_task, args=({str(root)!r}, i)) for i in range({tasks})]\n"
        "[p.start() for p in ps]; [p.join() for p in ps]\n"
        "sys.exit(max(p.exitcode for p in ps))\n"
    )
    trace = work / "trace.txt"
    run = _python(code, env, strace=trace)
    folders = count_paths(trace, root)
    collected = _python(f"from hpc_marker.manage.collect import collect_run; collect_run({str(root)!r})", strace=trace)
    folders += count_paths(trace, root)
    trace.unlink()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["ok"] == items, summary["ok"]
    files = sum(len(f) for _, _, f in os.walk(root))
    total = sum(folders.values())
    result = {
        "items": items,
        "tasks": tasks,
        "path_per_item": round(total / items, 3),
        "by_folder_per_item": {k: round(v / items, 3) for k, v in folders.most_common(8)},
        "files_in_run_folder_per_item": round(files / items, 3),
        "tasks_wall_s": run["wall_s"],
        "collect_wall_s": collected["wall_s"],
    }
    shutil.rmtree(root.parents[2], ignore_errors=True)
    return result


def synthetic_outputs(root: Path, tasks: int) -> None:
    """Manifests and commit logs of a finished run, as its tasks would have written them (no PDF read)."""
    from hpc_marker.planning.store import load_share, load_summary
    from hpc_marker.runstate.layout import RunPaths
    from hpc_marker.runstate.manifest import ManifestRecord
    from hpc_marker.runstate.progress import CommitLog

    paths = RunPaths(root)
    for summary in load_summary(paths.plan):
        share = load_share(paths.plan, summary)
        clock = 1_760_000_000.0 + summary.index
        log = CommitLog(paths.progress, summary.index)  # the lines a task writes (all their fields)
        with open(paths.task_manifest(summary.index), "w", encoding="utf-8") as manifest:
            for n, item in enumerate(share.items):
                status = "failed" if n % 997 == 0 else "ok"
                started, clock = clock, clock + 0.5
                record = ManifestRecord(
                    item_id=item.item_id,
                    pdf=item.pdf,
                    page_start=item.page_start,
                    page_stop=item.page_stop,
                    pages=item.pages,
                    status=status,
                    error="synthetic failure" if status != "ok" else None,
                    seconds=0.5,
                    engine="benchmark",
                    host=f"node{summary.index % 16:02d}",
                    gpu=str(summary.index % 4),
                    job_id=f"100_{summary.index}",
                    task=summary.index,
                    output=f"/out/{item.pdf[:-4]}/x.md",
                    started=started,
                    finished=clock,
                )
                manifest.write(record.to_line())
                log.append(item.item_id, status, item.pages, summary.index, started, clock)
        log.close()


def login(work: Path, items: int, tasks: int) -> dict:
    plan_code = (
        "import time, tracemalloc\n"
        "from hpc_marker.planning.plan import WorkItem, make_plan\n"
        "tracemalloc.start(); t = time.monotonic()\n"
        f"items = [WorkItem(item_id=f'{{n:07d}}', pdf=f'f{{n // 1000:04d}}/d{{n:07d}}.pdf', page_start=0, "
        f"page_stop=1 + n % 5, scan_status='ok', doc_id=f'{{n:07d}}') for n in range({items})]\n"
        f"plan = make_plan(items, {tasks})\n"
        "print(round(time.monotonic() - t, 2), round(tracemalloc.get_traced_memory()[1] / 2**20, 1))\n"
    )
    plan = _python(plan_code)
    plan_s, plan_mb = plan["stdout"].split()
    root = make_run(work, items, tasks, pdfs=None)
    plan_bytes = sum(p.stat().st_size for p in (root / "plan").iterdir())
    share = _python(
        "import tracemalloc, time\n"
        "from hpc_marker.planning.store import load_share, load_summary\n"
        f"folder = {str(root / 'plan')!r}\n"
        "tracemalloc.start(); t = time.monotonic()\n"
        "summaries = load_summary(folder); share = load_share(folder, summaries[0])\n"
        "print(round(time.monotonic() - t, 3), round(tracemalloc.get_traced_memory()[1] / 2**20, 1), "
        "len(share.items))\n"
    )
    share_s, share_mb, share_items = share["stdout"].split()
    synthetic_outputs(root, tasks)
    status_before = _python(
        "from hpc_marker.manage.status import load_status; from pathlib import Path; "
        "from hpc_marker.runstate.layout import RunPaths; "
        f"s = load_status(RunPaths(Path({str(root)!r}))); print(s.ok, s.failed, s.pending)"
    )
    collect = _python(f"from hpc_marker.manage.collect import collect_run; collect_run({str(root)!r})")
    status_after = _python(
        "from hpc_marker.manage.status import load_status; from pathlib import Path; "
        "from hpc_marker.runstate.layout import RunPaths; "
        f"s = load_status(RunPaths(Path({str(root)!r}))); print(s.ok, s.failed, s.pending)"
    )
    summary = json.loads((root / "summary.json").read_text())
    assert summary["ok"] + summary["failed"] == items
    result = {
        "items": items,
        "tasks": tasks,
        "plan_s": float(plan_s),
        "plan_peak_mb": float(plan_mb),
        "plan_on_disk_mb": round(plan_bytes / 2**20, 1),
        "share_load_s": float(share_s),
        "share_peak_mb": float(share_mb),
        "share_items": int(share_items),
        "status_running_s": status_before["wall_s"],
        "status_running_rss_mb": status_before["peak_rss_mb"],
        "collect_s": collect["wall_s"],
        "collect_rss_mb": collect["peak_rss_mb"],
        "status_finished_s": status_after["wall_s"],
        "report_mb": round((root / "report.html").stat().st_size / 2**20, 2),
        "manifest_csv_mb": round((root / "manifest.csv").stat().st_size / 2**20, 1),
    }
    shutil.rmtree(root.parents[2], ignore_errors=True)
    return result


PLAN_CODE = """
import os, resource, tempfile, time
from pathlib import Path
from hpc_marker.planning.plan import make_plan, work_items
from hpc_marker.planning.scan import ScannedPdf
from hpc_marker.planning.store import save_plan
where = Path('.')
scanned = [ScannedPdf(f'f{n // 1000:04d}/d{n:07d}.pdf', where, 1000, 1 + n % 5) for n in range(ITEMS)]
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
before = rss(); started = time.monotonic()
plan = make_plan(work_items(scanned), TASKS)
planned = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
saved = -1.0
if SAVE:
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic(); save_plan(plan, Path(folder)); saved = time.monotonic() - started
print(round(planned, 2), round(peak - before, 1), round(before, 1), round(saved, 2), len(plan.tasks))
"""


def plan(work: Path, items: int, tasks: int, before: Path | None = None) -> dict:
    """The plan of `items` synthetic scanned PDFs over `tasks` tasks, here and (`before`) in another tree."""
    result: dict = {"items": items, "tasks": tasks}
    for label, tree in (("before", before), ("after", ROOT)):
        if tree is None:
            continue
        code = PLAN_CODE.replace("ITEMS", str(items)).replace("TASKS", str(tasks))
        run = _python(code.replace("SAVE", str(label == "after")), tree=tree)  # today's save: minutes at 10^6
        plan_s, added_mb, input_mb, save_s, count = run["stdout"].split()
        result[label] = {
            "plan_s": float(plan_s),
            "plan_added_rss_mb": float(added_mb),
            "input_rss_mb": float(input_mb),
            "save_s": float(save_s) if float(save_s) >= 0 else None,
            "tasks": int(count),
            "tree": str(tree),
        }
    return result


def _job_environment(tree: Path) -> dict:
    """What `tree`'s collector job (its call's environment, set by util/jobrun.py) and its CLI set before pyarrow is
    imported, where they set anything: the collector is measured as it runs."""
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from hpc_marker.util.memory import arrow_pool_environment as a; print(json.dumps(a()))",
        ],
        env=dict(os.environ, PYTHONPATH=str(tree)),
        capture_output=True,
        text=True,
        cwd=tree,
    )
    return json.loads(found.stdout) if found.returncode == 0 else {}  # a tree without util/memory.py: nothing


def _fresh_copy(root: Path, label: str) -> Path:
    """A copy of the finished run folder `root` (its whole --out), with its record pointing at the copy: each
    tree collects a run nobody has collected yet (a second collect of the same folder finds less to do)."""
    from hpc_marker.runstate.layout import RunPaths

    out = root.parents[2]
    copy = out.with_name(f"{out.name}-{label}")
    shutil.rmtree(copy, ignore_errors=True)
    subprocess.run(["cp", "-a", str(out), str(copy)], check=True)
    paths = RunPaths(copy / root.relative_to(out))
    record = paths.load_record()
    record.out_dir = str(copy)
    paths.save_record(record)
    return paths.root


def collect(work: Path, items: int, tasks: int, before: Path | None = None) -> dict:
    """The collector of a synthetic finished run of `items` items over `tasks` tasks, here and (`before`)
    in another tree, each on its own copy of the run folder, collected for the first time."""
    pristine = make_run(work, items, tasks, pdfs=None)
    synthetic_outputs(pristine, tasks)
    result: dict = {"items": items, "tasks": tasks}
    written = {}
    for label, tree in (("before", before), ("after", ROOT)):
        if tree is None:
            continue
        root = _fresh_copy(pristine, label)
        code = f"from hpc_marker.manage.collect import collect_run; collect_run({str(root)!r})"
        run = _python(code, env=_job_environment(tree), tree=tree)
        summary = json.loads((root / "summary.json").read_text())
        summary.pop("collected")
        report = re.sub(r"(generated|collected) [0-9][^<·]*", "", (root / "report.html").read_text(encoding="utf-8"))
        report = report.replace(str(root.parents[2]), str(pristine.parents[2]))  # the copy's --out, as the run's
        written[label] = ((root / "manifest.csv").read_bytes(), summary, report)
        result[label] = {
            "collect_s": run["wall_s"],
            "collect_cpu_s": run["cpu_s"],
            "collect_rss_mb": run["peak_rss_mb"],
            "tree": str(tree),
        }
        result["manifest_csv_mb"] = round((root / "manifest.csv").stat().st_size / 2**20, 1)
        shutil.rmtree(root.parents[2], ignore_errors=True)
    if len(written) == 2:
        result["same_manifest_csv"] = written["before"][0] == written["after"][0]
        result["same_summary"] = written["before"][1] == written["after"][1]
        result["same_report"] = written["before"][2] == written["after"][2]  # but the times it was made
    shutil.rmtree(pristine.parents[2], ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["syscalls", "login", "plan", "collect"])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/hpcm-scale"))
    parser.add_argument("--json", type=Path, help="append each result as a JSON line")
    parser.add_argument("--before", type=Path, help="plan, collect: also measure this checkout (today's code)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HPCMARKER_STATE_DIR", tempfile.mkdtemp(prefix="hpcm-scale-state-"))
    for items in args.items:
        for tasks in args.tasks:
            load = os.getloadavg()[0]  # other work on the machine: wall times are upper bounds
            if args.mode in ("plan", "collect"):
                result = (plan if args.mode == "plan" else collect)(args.work, items, tasks, args.before)
            else:
                result = (syscalls if args.mode == "syscalls" else login)(args.work, items, tasks)
            result = dict(
                result,
                mode=args.mode,
                machine=f"{os.cpu_count()} cores",
                load_before=round(load, 1),
                load_after=round(os.getloadavg()[0], 1),
            )
            print(json.dumps(result), flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
