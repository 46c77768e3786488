"""The fault-injection suite of issue 7, on a real Slurm cluster (scripts/slurm-test-cluster.sh up).

Every scenario converts the mixed folder of tests/faultkit.py (the whole shared corpus, bad PDFs, an
owner-password-only PDF, hostile names, a pathological slow PDF) with `--gpus 4`, injects its fault for
real, heals the run as a user would (`resume`, `collect`, or nothing), and then checks it from its
outputs and manifests alone (faultkit.verify): one manifest line per input and per item, the expected
status of each bad input, every good PDF converted exactly once, outputs byte-identical to an
undisturbed `text` run. The runs use the `benchmark` engine (the text engine's output, plus a fixed
cost per page) so that they last long enough to be interrupted. "Any moment" is a seeded random moment
(HPCMARKER_FAULT_SEED, default 7). Results go to $HPCMARKER_FAULT_RESULTS (scripts/fault-suite.sh).
"""

from __future__ import annotations

import csv
import json
import os
import random
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import faultkit as fk
import pytest
import slurmkit
from faultkit import invoke
from slurmkit import run_options

# the real cluster and the whole corpus, for about half an hour, with the cluster's node down for a while
# (test_node_failure); scripts/fault-suite.sh runs it and records its numbers
pytestmark = [pytest.mark.slurm, pytest.mark.corpus, pytest.mark.slow]
SEED = int(os.environ.get("HPCMARKER_FAULT_SEED", "7"))
SECONDS_PER_PAGE = "0.02"  # about 13 s of conversion per run on 4 tasks: the window faults land in
WINDOW_S = 12.0
LEASE_S = "8"
NODE = "vm"
REQUEUE_HOLD = "31 s"  # a requeued job's BeginTime: cred_expire + 1 s (scripts/slurm-test-cluster.sh: 30 s)


@dataclass
class Run:
    out: Path
    run_id: str
    array: str = ""  # the array first submitted (a resume submits another)

    @property
    def paths(self):
        return fk.run_paths(self.out, self.run_id)

    @property
    def jobs(self) -> dict:
        return json.loads(self.paths.record.read_text())["jobs"]


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def submit(inputs: fk.Inputs, out: Path, name: str) -> Run:
    run = Run(out, f"fault-{name}-{secrets.token_hex(2)}")
    options = ("--item-timeout", fk.ITEM_TIMEOUT, "--lease-seconds", LEASE_S)
    slurmkit.submit(inputs.root, out, run.run_id, *run_options(4, "benchmark"), *options)
    run.array = run.jobs["convert"][0].split("_")[0]
    return run


def queued(run: Run) -> list[str]:
    """The run's jobs still in squeue (found by the run id in their comment)."""
    lines = fk.sh("squeue", "-h", "-o", "%i %T %k").stdout.splitlines()
    return [line for line in lines if line.split()[-1] == f"hpcmarker:{run.run_id}"]


def wait_quiet(run: Run, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while queued(run):
        assert time.time() < deadline, f"run {run.run_id} still queued after {timeout_s}s: {queued(run)}"
        time.sleep(0.5)


def task_pids(run: Run, task: int) -> list[int]:
    return fk.pids_with(SLURM_ARRAY_JOB_ID=run.array, SLURM_ARRAY_TASK_ID=str(task))


def live_tasks(run: Run, exclude=()) -> list[int]:
    return [t for t in range(4) if t not in exclude and task_pids(run, t)]


def wait_started(run: Run, tasks: int = 1, timeout_s: float = 120) -> float:
    """When `tasks` tasks of the array have processes."""
    deadline = time.time() + timeout_s
    while len(live_tasks(run)) < tasks:
        assert time.time() < deadline, "the array never started"
        time.sleep(0.1)
    return time.time()


def status(run: Run) -> dict:
    """`status --json`; its exit code must agree with the state (0 going or all ok, 3 finished with failed
    items, 4 incomplete or wedged)."""
    result = invoke("status", run.paths.root, "--json")
    now = json.loads(result.stdout)
    expected = (
        4 if now["state"] in ("incomplete", "wedged") else 3 if now["state"] == "finished" and now["failed"] else 0
    )
    assert result.exit_code == expected, result.output
    return now


def heal(run: Run) -> list[str]:
    """What a user does once the run's jobs are gone: resume while items are pending, else collect if
    the run was never collected. Returns the commands used."""
    steps: list[str] = []
    for _ in range(3):
        wait_quiet(run)
        now = status(run)
        if now["pending"]:
            result = invoke("resume", run.paths.root)
            assert result.exit_code == 0, result.output
            steps.append("resume")
            continue
        if now["state"] != "finished":
            result = invoke("collect", run.paths.root)
            assert result.exit_code == 0, result.output
            steps.append("collect")
        break
    return steps


def checked(run: Run, inputs: fk.Inputs, **notes) -> fk.Counts:
    """Verify the run and record its counts (before any assertion)."""
    counts = fk.verify(run.out, run.paths, inputs)
    fk.note_counts(counts, seed=SEED, **notes)
    return counts


def release_requeued(run: Run, tasks: list[int], rng: random.Random, timeout_s: float = 60) -> None:
    """A requeued job waits REQUEUE_HOLD (BeginTime) before it may start again; start it 0-3 s after it is pending
    with its old batch step gone instead. Safe after `scontrol requeue` (the job completes, then pends);
    not after a node failure (slurmd still knows the job, refuses it and the node drains: test_node_failure)."""
    for task in tasks:
        job, deadline = f"{run.array}_{task}", time.time() + timeout_s
        while True:
            state = fk.sh("squeue", "-h", "-j", job, "-o", "%T %A", check=False).stdout.split()
            if not state or (state[0] == "PENDING" and not fk.batch_step_alive(state[1])):
                break
            assert time.time() < deadline, f"{job} not pending with its old step gone: {state}"
            time.sleep(0.3)
        time.sleep(rng.uniform(0, 3))
        fk.sh("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> fk.Inputs:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HPCMARKER_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        built = fk.build_inputs(tmp_path_factory.mktemp("mixed") / "pdfs")
        return fk.reference_run(built, tmp_path_factory.mktemp("reference") / "out")


@pytest.fixture(scope="module")
def control(inputs, tmp_path_factory) -> tuple[Run, float, list[str]]:
    """One undisturbed run on Slurm (also the run whose manifest the torn-line scenario tears)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HPCMARKER_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        patch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", SECONDS_PER_PAGE)
        start = time.monotonic()
        run = submit(inputs, tmp_path_factory.mktemp("control") / "out", "control")
        steps = heal(run)
        return run, time.monotonic() - start, steps


@pytest.fixture(autouse=True)
def bench_cost(monkeypatch):
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", SECONDS_PER_PAGE)  # resubmissions cost the same


PER_INPUT = [
    ("corpus", "none: the whole shared corpus, undisturbed", "57 PDFs, English and Chinese, 1-516 pages"),
    ("bad", "bad PDFs", "inputs.make_bad_pdfs: empty, not a PDF, truncated, header only, zero pages, encrypted"),
    ("owner-only", "owner-password-only PDF", "inputs.make_owner_password_pdf: opens without a password"),
    (
        "hostile",
        "hostile names",
        "inputs.make_hostile_names: shell metacharacters, newline, CJK, same names, "
        "a folder symlink, a symlink loop, a second name for one file",
    ),
    (
        "slow",
        "pathological slow PDF",
        f"inputs.pathological_pdf(400_000) (about 8 s) under --item-timeout {fk.ITEM_TIMEOUT}: must be `timeout`",
    ),
]


def test_undisturbed_run_and_each_kind_of_input(inputs, control):
    run, wall, steps = control
    counts = fk.verify(run.out, run.paths, inputs)
    failed = []
    for kind, fault, how in PER_INPUT:
        with fk.scenario(fault, how + " (in the undisturbed Slurm run)"):
            part = counts.only(inputs.of_kind(kind))
            fk.note_counts(part, healed_by=steps or "nothing", seed=SEED, wall_s=round(wall, 1))
            if not part.clean:
                failed.append((kind, part.problems))
    assert steps == [], steps  # an undisturbed run needs no help
    assert counts.clean and not failed, (counts.problems, failed)


def test_verify_counts_each_kind_of_damage(inputs, control, tmp_path):
    """The checker itself: each kind of damage, made by hand in a copy of a good run, is counted."""
    run, _, _ = control
    copy = Run(tmp_path / "out", run.run_id)
    shutil.copytree(run.out, copy.out, symlinks=True)
    lines = (copy.paths.manifest_csv.read_text(encoding="utf-8")).splitlines(keepends=True)
    hyperref = [line for line in lines[1:] if next(csv.reader([line]), [])[1:2] == ["corpus/hyperref/hyperref.pdf"]]
    lines.remove(hyperref[1])  # one part of a split PDF: lost
    lines.append(hyperref[0])  # another recorded twice
    copy.paths.manifest_csv.write_text("".join(lines), encoding="utf-8")
    (copy.out / "corpus/base/letter/letter.md").write_text("half", encoding="utf-8")  # mismatch
    (copy.out / "corpus/base/.doc.partial-0a1b2c3d").mkdir()  # a staging folder under a final name
    (copy.out / "corpus/base/.doc.partial-0a1b2c3d/doc.md").write_text("x", encoding="utf-8")
    (copy.out / "bad/empty").mkdir(parents=True)  # a document for an input that must fail
    (copy.out / "bad/empty/empty.md").write_text("", encoding="utf-8")
    counts = fk.verify(copy.out, copy.paths, inputs)
    # lost thrice: no line for the item, its task-manifest line not merged, the PDF's pages not covered
    assert (counts.lost, counts.twice, counts.mismatches, counts.half_written) == (3, 1, 1, 2), counts.problems
    assert counts.wrong_status == 0 and not counts.clean


@pytest.mark.parametrize("mode", ["two tasks", "every task"])
def test_sigkill_of_tasks_at_random_moments(inputs, tmp_path, mode):
    """Two tasks at two moments: the others take their items over after the lease. Every task at one
    moment: nobody is left to take over, the collector runs, and the user resumes."""
    rng = rng_for(f"sigkill-{mode}")
    with fk.scenario(
        f"SIGKILL of {mode}",
        "kill -9 of every process of a live array task (found by SLURM_ARRAY_* "
        "in /proc/*/environ); "
        + ("two tasks at two seeded moments" if mode == "two tasks" else "all four tasks at one seeded moment"),
    ):
        run = submit(inputs, tmp_path / "out", "kill")
        started, kills = wait_started(run, 1 if mode == "two tasks" else 4), []
        for moment in sorted(rng.uniform(0, WINDOW_S) for _ in range(2 if mode == "two tasks" else 1)):
            time.sleep(max(0.0, started + moment - time.time()))
            live = live_tasks(run, exclude=[k[0] for k in kills])
            for task in [rng.choice(live)] if mode == "two tasks" and live else live:
                kills.append((task, round(moment, 1), fk.kill9(task_pids(run, task))))
        steps = heal(run)
        counts = checked(
            run,
            inputs,
            healed_by=steps or "nothing",
            detail="; ".join(f"task {t} at {m}s ({n} processes)" for t, m, n in kills),
        )
        assert len(kills) == (2 if mode == "two tasks" else 4) and all(n for *_, n in kills), kills  # they landed
        assert mode == "two tasks" or steps[0] == "resume", steps  # no task was left to take over
        assert counts.clean, counts.problems


def test_usr2_and_sigterm_before_the_time_limit(inputs, tmp_path):
    rng = rng_for("signals")
    with fk.scenario(
        "SIGTERM / USR2 before a time limit",
        "scancel --batch --signal=USR2 (what --signal=USR2@90 "
        "sends) to one live task, --signal=TERM (the time limit) to another, at seeded moments",
    ):
        run = submit(inputs, tmp_path / "out", "signals")
        started, sent = wait_started(run), []
        for moment, name in zip(
            sorted(rng.uniform(0, WINDOW_S) for _ in range(2)), rng.sample(["USR2", "TERM"], 2), strict=False
        ):
            time.sleep(max(0.0, started + moment - time.time()))
            live = live_tasks(run, exclude=[s[1] for s in sent])
            if live:
                task = rng.choice(live)
                done = fk.sh("scancel", "--batch", f"--signal={name}", f"{run.array}_{task}", check=False)
                sent.append((name, task, round(moment, 1), done.returncode == 0))
        steps = heal(run)
        logs = {t: (run.paths.jobs / f"{run.array}_{t}_0_log.out").read_text() for _, t, *_ in sent}
        counts = checked(
            run,
            inputs,
            healed_by=steps or "nothing",
            detail="; ".join(
                f"{n} to task {t} at {m}s (its log: "
                f"{'stopped' if 'stopped by SIGTERM' in logs[t] else 'drained/finished'})"
                for n, t, m, _ in sent
            ),
        )
        assert len(sent) == 2 and all(ok for *_, ok in sent), sent
        assert counts.clean, counts.problems


def test_preemption_with_requeue(inputs, tmp_path):
    rng = rng_for("requeue")
    with fk.scenario(
        "preemption with requeue",
        "scontrol requeue of two live array tasks at a seeded moment "
        f"(Slurm's {REQUEUE_HOLD} requeue hold cut short: scontrol update StartTime=now after 0-3 s)",
    ):
        run = submit(inputs, tmp_path / "out", "requeue")
        started = wait_started(run)
        moment = rng.uniform(1, WINDOW_S)
        time.sleep(max(0.0, started + moment - time.time()))
        live = live_tasks(run)
        tasks = sorted(rng.sample(live, min(2, len(live))))
        requeued = [t for t in tasks if fk.sh("scontrol", "requeue", f"{run.array}_{t}", check=False).returncode == 0]
        release_requeued(run, requeued, rng)
        steps = heal(run)
        states = {t: fk.sacct_states(f"{run.array}_{t}") for t in requeued}
        counts = checked(
            run,
            inputs,
            healed_by=steps or "nothing (the requeued tasks ran again)",
            detail=f"at {moment:.1f}s requeued tasks {requeued}; sacct: {states}",
        )
        assert requeued and all("REQUEUED" in s for s in states.values()), states
        assert steps == [], steps  # Slurm runs the requeued tasks again: nothing for the user to do
        assert counts.clean, counts.problems


def other_jobs_running(run: Run) -> list[str]:
    lines = fk.sh("squeue", "-h", "-t", "RUNNING", "-o", "%i %k").stdout.splitlines()
    return [line for line in lines if line.split()[-1] != f"hpcmarker:{run.run_id}"]


def resume_node() -> None:
    state = fk.sh("sinfo", "-h", "-n", NODE, "-o", "%T", check=False).stdout.strip()
    if "down" in state or "drain" in state:
        fk.sh("scontrol", "update", f"nodename={NODE}", "state=resume", check=False)


@pytest.mark.parametrize("requeue", [True, False], ids=["requeued", "not requeueable"])
def test_node_failure(inputs, tmp_path, request, monkeypatch, requeue):
    """The tasks end NODE_FAIL. Requeueable (Slurm's default here): Slurm runs them again. Not
    (SBATCH_NO_REQUEUE=1 at submit): they stay failed, the collector runs, and the user resumes."""
    rng = rng_for(f"node-{requeue}")
    if not requeue:
        monkeypatch.setenv("SBATCH_NO_REQUEUE", "1")
    with fk.scenario(
        f"node failure ({'requeued' if requeue else 'not requeueable'})",
        f"scontrol update nodename={NODE} state=down at a seeded moment, then state=resume; "
        + (
            f"Slurm requeues the tasks and starts them again after its {REQUEUE_HOLD} requeue hold"
            if requeue
            else "jobs submitted with SBATCH_NO_REQUEUE=1, so they are not requeued"
        ),
    ):
        run = submit(inputs, tmp_path / "out", "node")
        started = wait_started(run)
        deadline = time.time() + 120  # the node is shared: take no one else's jobs down with ours
        while other_jobs_running(run) and time.time() < deadline:
            time.sleep(0.5)
        assert not other_jobs_running(run), f"other jobs kept the node busy: {other_jobs_running(run)}"
        moment = rng.uniform(1, WINDOW_S)
        time.sleep(max(0.0, started + moment - time.time()))
        live = live_tasks(run)
        request.addfinalizer(resume_node)
        fk.sh("scontrol", "update", f"nodename={NODE}", "state=down", "reason=hpcmarker-fault-suite")
        down_at = time.time()
        while any(task_pids(run, t) for t in range(4)) and time.time() < down_at + 30:
            time.sleep(0.2)
        survivors = [t for t in range(4) if task_pids(run, t)]
        node_state = fk.sh("sinfo", "-h", "-n", NODE, "-o", "%T").stdout.strip()
        resume_node()  # the requeued tasks start when Slurm's requeue hold ends (REQUEUE_HOLD): cutting it short
        steps = heal(run)  # here makes slurmd refuse them ("Job already running") and drain the node
        states = {t: fk.sacct_states(f"{run.array}_{t}") for t in live}
        counts = checked(
            run,
            inputs,
            healed_by=steps or "nothing (Slurm ran the tasks again)",
            detail=f"down at {moment:.1f}s with tasks {live} running; node then {node_state!r}; "
            f"tasks' processes alive after 30 s: {survivors}; sacct: {states}",
        )
        assert live and all("NODE_FAIL" in s for s in states.values()), states
        assert steps == ([] if requeue else ["resume"]), steps
        assert survivors == []
        assert fk.sh("sinfo", "-h", "-n", NODE, "-o", "%T").stdout.strip() in ("idle", "mixed", "allocated")
        assert counts.clean, counts.problems


@pytest.mark.parametrize("how", ["kill -9", "scancel"])
def test_collector_dies_then_collect_by_hand(inputs, tmp_path, how):
    rng = rng_for(f"collector-{how}")
    with fk.scenario(
        f"collector dies ({how})",
        f"{how} of the collector job a seeded 0-0.4 s after its process appears, then `hpcmarker collect RUN`",
    ):
        run = submit(inputs, tmp_path / "out", "collector")
        collector = run.jobs["collect"][0]
        deadline = time.time() + 300
        while not (pids := fk.pids_with(SLURM_JOB_ID=collector)):
            assert time.time() < deadline and queued(run), "the collector never ran"
            time.sleep(0.02)
        delay = rng.uniform(0, 0.4)
        time.sleep(delay)
        if how == "kill -9":
            fk.kill9(fk.pids_with(SLURM_JOB_ID=collector) or pids)
        else:
            fk.sh("scancel", collector)
        wait_quiet(run)
        ended = fk.sacct_states(collector)
        had_summary = run.paths.summary.exists()
        result = invoke("collect", run.paths.root)
        assert result.exit_code == 0, result.output
        counts = checked(
            run,
            inputs,
            healed_by="collect",
            detail=f"after {delay:.2f}s; collector ended {ended}; summary.json already there: {had_summary}",
        )
        assert ended and "COMPLETED" not in ended, ended  # it really died
        assert counts.clean, counts.problems


def test_torn_last_line_of_a_task_manifest(inputs, control):
    run, _, _ = control
    rng = rng_for("torn")
    with fk.scenario(
        "torn last manifest line",
        "a task manifest truncated inside its last line after the run (seeded cut), then `hpcmarker collect RUN`",
    ):
        manifest = rng.choice(sorted(run.paths.manifests.glob("task-*.jsonl")))
        data = manifest.read_bytes()
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        item = json.loads(data[last:])["item_id"]
        cut = rng.randint(last + 1, len(data) - 2)  # inside the line: its end and newline are gone
        manifest.write_bytes(data[:cut])
        result = invoke("collect", run.paths.root)
        summary = json.loads(run.paths.summary.read_text())
        counts = checked(
            run,
            inputs,
            healed_by="collect",
            detail=f"{manifest.name} cut at byte {cut - last} of its last line (item {item}); "
            f"collect said: {result.output.strip().splitlines()[-1]}",
        )
        assert result.exit_code == 0, result.output  # not fatal
        assert "1 torn manifest line reported" in result.output  # reported
        line_number = data[:last].count(b"\n") + 1
        assert summary["torn_manifest_lines"] == [f"{manifest.name}:{line_number}: unreadable line (JSONDecodeError)"]
        assert summary["recovered_records"] == 1  # recovered from its done marker, not dropped
        assert counts.torn_lines == 1 and counts.recovered == 1
        assert counts.clean, counts.problems
