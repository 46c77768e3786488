"""The run folder: `OUT/.hpcmarker/runs/<run-id>/`, and where everything of a run lives in it.

run.json     the RunRecord (settings and job ids)
plan/        the plan: items.parquet (one row group per task) and tasks.json (planning/store.py)
scripts/     the rendered sbatch scripts, exactly as submitted
jobs/        the jobs' calls (one per sbatch or local start: util/jobrun.py), per-job logs
manifests/   task-<i>.jsonl, one JSON line per work item
claims/      who holds which batch (a folder per task) or merge (claims.py)
done/        one done marker per finished item, in shards of a thousand documents (claims.py)
progress/    each task's heartbeat and commit log (progress.py)
staging/     outputs being written, renamed into place when whole
parts/       finished parts of split PDFs, until they are merged into one document
logs/        task logs gathered by the collector
manifest.csv, summary.json   written by the collector
cancelled    `cancel`'s mark: no new round starts while it is there (manage/rounds.py); `resume` removes it
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.runstate.record import RunRecord
from hpc_marker.util.files import atomic_write

RUNS_SUBDIR = Path(".hpcmarker") / "runs"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def progress(self) -> Path:
        return self.root / "progress"

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def claims(self) -> Path:
        return self.root / "claims"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def parts(self) -> Path:
        return self.root / "parts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def manifest_csv(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def cancel_mark(self) -> Path:
        return self.root / "cancelled"

    def task_manifest(self, index: int) -> Path:
        return self.manifests / f"task-{index}.jsonl"

    def create(self) -> None:
        """Make the run folder tree, private to the user."""
        for folder in (
            self.root,
            self.plan,
            self.scripts,
            self.jobs,
            self.manifests,
            self.claims,
            self.done,
            self.progress,
            self.staging,
            self.parts,
            self.logs,
        ):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)  # mkdir's mode is filtered by the umask

    def load_record(self) -> RunRecord:
        return RunRecord.from_json(json.loads(self.record.read_text()))

    def save_record(self, record: RunRecord) -> None:
        atomic_write(self.record, json.dumps(record.to_json(), indent=1) + "\n")
