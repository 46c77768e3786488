"""The fault-injection kit (issue 7): the mixed input folder, the reference outputs, `verify`, the recorder.

- `build_inputs` writes one input folder: the whole shared corpus, the bad PDFs of inputs.make_bad_pdfs,
  an owner-password-only PDF, good PDFs under hostile names, and a pathological slow PDF. It knows, on
  its own (not from hpcmarker's scan), what each input must become: a document, or a manifest status.
- `reference_run` converts that folder once, undisturbed, with the `text` engine (local executor).
- `verify` checks a finished run from its outputs and manifests alone (manifest.csv, the task manifests,
  plan.json, summary.json, the files under OUT) and counts what is wrong: items lost, items recorded
  twice, wrong statuses, outputs that differ from the reference, unexpected (half-written) files.
- `sh`, `pids_with`, `kill9`, `sacct_states`, `sacct_times`, `batch_step_alive`: the Slurm and /proc helpers
  injecting (and the Slurm tests) use.
- `scenario` / `recorded` / `note` append one JSON line per scenario to $HPCMARKER_FAULT_RESULTS
  (nothing when unset), written on the way out of the test, so a failing scenario shows its numbers.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import pytest
from inputs import (
    CORPUS,
    EXAMPLES,
    PAGES_CSV,
    Expected,
    make_bad_pdfs,
    make_hostile_names,
    make_owner_password_pdf,
    pathological_pdf,
)
from runkit import LOCAL_TEXT, invoke
from runkit import run_folder as run_paths

from hpc_marker.planning.store import load_plan

RESULTS_ENV = "HPCMARKER_FAULT_RESULTS"
ITEM_TIMEOUT = "3+0.5/page"  # the slow PDF needs about 8 s: recorded `timeout`; every corpus item fits easily
SLOW_PDF = "zz-slow.pdf"
KINDS = ("corpus", "bad", "owner-only", "hostile", "slow")


@dataclass
class Inputs:
    """The mixed input folder and what each input must become."""

    root: Path
    good: dict[str, int] = field(default_factory=dict)  # relpath -> pages: one document each
    bad: dict[str, Expected] = field(default_factory=dict)  # relpath -> the manifest status it must get
    kind: dict[str, str] = field(default_factory=dict)  # relpath -> one of KINDS
    reference: dict[str, bytes] = field(default_factory=dict)  # output file (relative to OUT) -> content

    @property
    def all(self) -> list[str]:
        return sorted(set(self.good) | set(self.bad))

    def of_kind(self, kind: str) -> list[str]:
        return [rel for rel in self.all if self.kind[rel] == kind]


def _pages(path: Path) -> int:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(path))
    try:
        return len(doc)
    finally:
        doc.close()


def build_inputs(root: Path) -> Inputs:
    """The whole corpus, bad PDFs, an owner-password-only PDF, hostile names and a slow PDF under `root`."""
    inputs = Inputs(root=root)
    shutil.copytree(CORPUS, root / "corpus")
    with PAGES_CSV.open(newline="") as fh:
        for row in csv.DictReader(fh):
            inputs.good[f"corpus/{row['path']}"] = int(row["pages"])
            inputs.kind[f"corpus/{row['path']}"] = "corpus"
    for name, expected in make_bad_pdfs(root / "bad").items():
        inputs.bad[f"bad/{name}"], inputs.kind[f"bad/{name}"] = expected, "bad"
    make_owner_password_pdf(root / "owner-only.pdf")
    inputs.good["owner-only.pdf"], inputs.kind["owner-only.pdf"] = _pages(root / "owner-only.pdf"), "owner-only"
    source = EXAMPLES / "en" / "upref.pdf"
    for rel in make_hostile_names(root / "names", source):  # its second name for one file is not an input
        inputs.good[f"names/{rel}"], inputs.kind[f"names/{rel}"] = _pages(source), "hostile"
    (root / SLOW_PDF).write_bytes(pathological_pdf(400_000))
    inputs.bad[SLOW_PDF], inputs.kind[SLOW_PDF] = Expected("timeout", "no result after"), "slow"
    return inputs


def _normalized(rel: str, data: bytes) -> bytes:
    """The benchmark engine is the text engine plus a sleep: its metadata names it, nothing else differs."""
    if not rel.endswith("_meta.json"):
        return data

    def scrub(value):
        if isinstance(value, dict):
            return {k: ("text" if k == "engine" and v == "benchmark" else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return json.dumps(scrub(json.loads(data)), sort_keys=True, ensure_ascii=False).encode()


def output_files(out: Path) -> dict[str, bytes]:
    """Every file under OUT but the run folders, by relative path, normalized."""
    files = {}
    for path in Path(out).rglob("*"):
        rel = path.relative_to(out)
        if rel.parts[0] == ".hpcmarker" or not path.is_file():
            continue
        files[rel.as_posix()] = _normalized(rel.as_posix(), path.read_bytes())
    return files


def reference_run(inputs: Inputs, out: Path) -> Inputs:
    """One undisturbed run with the `text` engine on this machine; its outputs become the reference."""
    result = invoke(
        "submit",
        "--pdfs",
        inputs.root,
        "--out",
        out,
        *LOCAL_TEXT,
        "--gpus",
        "4",
        "--item-timeout",
        ITEM_TIMEOUT,
        "--run-id",
        "reference",
    )
    assert result.exit_code == (3 if inputs.bad else 0), result.output  # 3: finished, the bad inputs failed
    inputs.reference = output_files(out)
    counts = verify(out, run_paths(out, "reference"), inputs)
    assert counts.clean, counts.problems  # the reference itself: right statuses, nothing lost
    return inputs


def document_md(rel: str) -> str:
    doc = PurePosixPath(rel).with_suffix("")
    return f"{doc}/{doc.name}.md"


@dataclass
class Counts:
    inputs: int = 0
    items: int = 0
    lost: int = 0  # planned items without a manifest line, inputs with none, documents missing or incomplete
    twice: int = 0  # items (or files under a second name) with more than one manifest line
    wrong_status: int = 0  # a bad input without its expected status and reason, a good one not ok
    mismatches: int = 0  # output files whose bytes differ from the reference run's
    half_written: int = 0  # files under OUT the reference does not have (partial, stale, for a failed input)
    torn_lines: int = 0  # unreadable task-manifest lines (reported in summary.json, not fatal)
    recovered: int = 0  # items the collector recovered from their done markers
    problems: list[str] = field(default_factory=list)
    per_input: dict[str, Counter] = field(default_factory=dict, repr=False)

    @property
    def clean(self) -> bool:
        return not self.problems

    def only(self, rels: list[str]) -> Counts:
        """The counts of some inputs (one kind) alone."""
        part = Counts(inputs=len(rels), items=sum(self.per_input[r]["items"] for r in rels))
        for key in ("lost", "twice", "wrong_status", "mismatches", "half_written"):
            setattr(part, key, sum(self.per_input[r][key] for r in rels))
        part.problems = [p for p in self.problems if any(p.startswith(f"{r}: ") for r in rels)]
        return part


def _task_manifests(folder: Path) -> tuple[list[dict], int]:
    records, torn = [], 0
    for path in sorted(folder.glob("task-*.jsonl")):
        for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                torn += 1
    return records, torn


def verify(out_dir: Path, paths, inputs: Inputs) -> Counts:
    """Check a finished run from its outputs and manifests alone; returns what is wrong, counted."""
    out_dir = Path(out_dir)
    counts = Counts(inputs=len(inputs.all), per_input={rel: Counter() for rel in inputs.all})
    mark = counts.per_input

    def problem(rel: str | None, key: str | None, text: str, n: int = 1) -> None:
        if key:
            setattr(counts, key, getattr(counts, key) + n)
            if rel in mark:
                mark[rel][key] += n
        counts.problems.append(f"{rel}: {text}" if rel else text)

    plan = load_plan(paths.plan).to_json()
    planned = {item["item_id"]: item for task in plan["tasks"] for item in task["items"]}
    counts.items = len(planned)
    rows: list[dict] = []
    if paths.manifest_csv.exists():
        with paths.manifest_csv.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    else:
        counts.problems.append("no manifest.csv: the run was never collected")
    task_records, counts.torn_lines = _task_manifests(paths.manifests)
    _check_items(planned, rows, task_records, mark, problem)
    by_pdf: dict[str, list[dict]] = {}
    for row in rows:
        by_pdf.setdefault(row["pdf"], []).append(row)
    for pdf in sorted(set(by_pdf) - set(inputs.all)):  # e.g. the second name of one file
        problem(None, "twice", f"manifest lines for {pdf!r}, which is not an input of its own")
    for rel in inputs.all:
        _check_input(rel, by_pdf.get(rel, []), planned, inputs, problem)
    _check_files(out_dir, inputs, problem)
    _check_summary(paths, counts)
    return counts


def _check_items(planned: dict[str, dict], rows: list[dict], task_records: list[dict], mark, problem) -> None:
    """Each planned item has exactly one line in manifest.csv, and each task-manifest line made it there."""
    in_csv = Counter(row["item_id"] for row in rows)
    for record in task_records:
        if record["item_id"] not in in_csv:
            problem(record["pdf"], "lost", f"task-manifest line for {record['item_id']} missing from manifest.csv")
    for item_id, item in planned.items():
        if item["pdf"] in mark:
            mark[item["pdf"]]["items"] += 1
        if in_csv[item_id] == 0:
            problem(item["pdf"], "lost", f"item {item_id} has no manifest line")
        elif in_csv[item_id] > 1:
            problem(item["pdf"], "twice", f"item {item_id} has {in_csv[item_id]} manifest lines")
    for item_id in sorted(set(in_csv) - set(planned)):
        problem(None, "twice", f"manifest line for an item not in the plan: {item_id}")


def _check_input(rel: str, mine: list[dict], planned: dict[str, dict], inputs: Inputs, problem) -> None:
    """One input's manifest lines: a bad file has its expected status; a good one all its pages ok, once."""
    if not mine:
        if not any(item["pdf"] == rel for item in planned.values()):
            problem(rel, "lost", "no manifest line and not in the plan")
        return
    if rel in inputs.bad:
        expected = inputs.bad[rel]
        for row in mine:
            if row["status"] != expected.status or expected.reason not in (row["error"] or ""):
                problem(rel, "wrong_status", f"{row['status']} ({row['error']}), expected {expected.status}")
        return
    if any(row["status"] != "ok" for row in mine):
        problem(rel, "wrong_status", f"statuses {sorted({r['status'] for r in mine})}, expected ok")
    ranges = sorted({(int(r["page_start"]), int(r["page_stop"])) for r in mine if r["status"] == "ok"})
    covered = [p for start, stop in ranges for p in range(start, stop)]
    if covered != list(range(inputs.good[rel])):
        problem(rel, "lost", f"ok page ranges {ranges} do not cover its {inputs.good[rel]} pages once")


def _owner(name: str, inputs: Inputs) -> str | None:
    """The input a file under OUT belongs to: inside its document folder, or a hidden sibling of it
    (`.<stem>.partial-*`, `.<stem>.old-*`)."""
    for rel in inputs.all:
        doc = PurePosixPath(rel).with_suffix("")
        parent = doc.parent.as_posix()
        hidden = f".{doc.name}." if parent == "." else f"{parent}/.{doc.name}."
        if name.startswith(f"{doc}/") or name.startswith(hidden):
            return rel
    return None


def _check_files(out_dir: Path, inputs: Inputs, problem) -> None:
    files = output_files(out_dir)
    for rel in inputs.good:
        if document_md(rel) not in files:
            problem(rel, "lost", f"no document {document_md(rel)}")
    for name, data in sorted(files.items()):
        if name not in inputs.reference:
            problem(_owner(name, inputs), "half_written", f"unexpected file under OUT: {name!r}")
        elif data != inputs.reference[name]:
            problem(_owner(name, inputs), "mismatches", f"{name!r} differs from the reference run's")
    for name in sorted(set(inputs.reference) - set(files)):
        if not name.endswith(".md"):  # a missing document is counted as lost above
            problem(_owner(name, inputs), "mismatches", f"{name!r} missing (the reference run has it)")


def _check_summary(paths, counts: Counts) -> None:
    if not paths.summary.exists():
        counts.problems.append("no summary.json: the run was never collected")
        return
    summary = json.loads(paths.summary.read_text())
    counts.recovered = summary.get("recovered_records", 0)
    if summary["missing"]:
        counts.problems.append(f"summary.json lists missing items: {summary['missing']}")
    if len(summary["torn_manifest_lines"]) != counts.torn_lines:
        counts.problems.append(
            f"{counts.torn_lines} torn manifest lines, summary.json reports {summary['torn_manifest_lines']}"
        )


# ---- Slurm and processes -------------------------------------------------------------------------


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def pids_with(**env: str) -> list[int]:
    """PIDs whose environment holds every KEY=VALUE given (a job's processes, workers included)."""
    wanted = {f"{k}={v}".encode() for k, v in env.items()}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill9(pids: list[int]) -> int:
    killed = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def sacct_states(job: str) -> list[str]:
    """Every state the job went through (-D: requeued runs too)."""
    out = sh("sacct", "-n", "-P", "-X", "-D", "-j", job, "-o", "JobID,State").stdout
    return [line.split("|")[1] for line in out.splitlines() if line.split("|")[0] == job]


def sacct_times(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Start and end (sacct's words) of each job, by job id (array tasks as <array>_<task>)."""
    argv = ["sacct", "-n", "-P", "-X", "-o", "JobID,Start,End"]
    for jid in {j.split("_")[0] for j in job_ids}:
        argv += ["-j", jid]
    out = sh(*argv).stdout
    return {line.split("|")[0]: tuple(line.split("|")[1:3]) for line in out.splitlines() if line}


def batch_step_alive(raw_job_id: str) -> bool:
    """Whether the job's batch step (its slurmstepd) is still on the node."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(
                f"slurmstepd: [{raw_job_id}.".encode()
            ):
                return True
        except OSError:
            continue
    return False


# ---- the recorder -------------------------------------------------------------------------------------

_current: list[dict] = []


def note(**values) -> None:
    """Add values (counts, details) to the scenario being recorded; a no-op outside one."""
    if _current:
        _current[-1].update(values)


def note_counts(counts: Counts, **values) -> None:
    note(
        **{k: v for k, v in asdict(counts).items() if k not in ("problems", "per_input")},
        problems=counts.problems[:10],
        **values,
    )


@contextmanager
def scenario(fault: str, how: str):
    """Record one scenario: its row is appended when the block ends, passed or not (skips are not)."""
    row: dict = {"fault": fault, "how": how}
    _current.append(row)
    start, passed, skipped = time.monotonic(), False, False
    try:
        yield row
        passed = True
    except pytest.skip.Exception:
        skipped = True
        raise
    finally:
        _current.pop()
        if not skipped:
            row.setdefault("wall_s", round(time.monotonic() - start, 1))  # unless the test noted its own
            row["passed"] = passed
            write_row(row)


def recorded(fault: str, how: str):
    """Decorator for a whole test: it is one scenario (see `scenario`)."""

    def wrap(function):
        @functools.wraps(function)
        def test(*args, **kwargs):
            with scenario(fault, how):
                return function(*args, **kwargs)

        return test

    return wrap


def write_row(row: dict) -> None:
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return
    row = dict(row, host=platform.node(), cpus=os.cpu_count(), at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
