"""Outputs are private by default, and a full disk fails items cleanly without damaging earlier ones."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import faultkit
import pytest
from inputs import CORPUS, PAGES_CSV
from runkit import invoke, manifest_records, run_local

from hpc_marker.runstate.manifest import latest_by_item


def _modes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*")
        if ".hpcmarker" not in p.parts
    }


@pytest.mark.slow
@pytest.mark.parametrize("permissions, others_bits", [("private", 0o077), ("group", 0o007), ("world", 0o002)])
def test_outputs_follow_permissions(tmp_path, sample_pdfs, permissions, others_bits):
    extra = ["--gpus", "2"] + ([] if permissions == "private" else ["--permissions", permissions])
    old = os.umask(0o002)  # a permissive login umask: hpcmarker must not rely on the user's
    try:
        run = run_local(sample_pdfs, tmp_path / "out", *extra)
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "out")
    assert any(name.endswith(".md") for name in modes)
    assert all(mode & others_bits == 0 for mode in modes.values()), {n: oct(m) for n, m in modes.items()}
    if permissions != "private":
        assert all(mode & 0o040 for mode in modes.values())  # the group can read
    run = run.paths.root
    assert stat.S_IMODE(run.stat().st_mode) == 0o700  # the run folder (secrets, logs) is private always
    secrets = [p for p in run.rglob("*") if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert permissions != "private" or not secrets, secrets


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (tests marked `root`)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True, capture_output=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.corpus
@faultkit.recorded("disk full", "a 16 MiB tmpfs filled to half a run's need, then freed; `hpcmarker retry RUN`")
def test_disk_full_fails_items_with_the_reason_and_damages_nothing(tmp_path, small_disk):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    import csv

    with PAGES_CSV.open() as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["pages"]))
    for row in rows[10:30]:  # twenty small-to-middle PDFs, English and Chinese
        (pdfs / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / row["path"], pdfs / row["path"])
    # An undisturbed run on the small disk: its outputs, and how much of the disk a whole run takes.
    before = shutil.disk_usage(small_disk).used
    reference = small_disk / "reference"
    run_local(pdfs, reference, "--gpus", "1")
    for report in reference.rglob("report.html"):
        report.unlink()  # written last, by the collector: the conversion itself needs the rest
    needed = shutil.disk_usage(small_disk).used - before
    expected = {p.relative_to(reference).as_posix(): p.read_bytes() for p in reference.rglob("*.md")}
    shutil.rmtree(reference)
    # Leave room for about half of a run, then let the run fill the disk.
    out = small_disk / "out"
    out.mkdir()
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - needed // 2))

    run = run_local(pdfs, out, "--gpus", "1", check=False)  # the disk fills during it
    paths = run.paths
    assert "Traceback" not in run.output and "(None)" not in run.output
    assert run.result.exit_code == 4, run.output  # incomplete, not "done"
    assert f"run {paths.run_id}: incomplete: " in run.output and "(storage full)" in run.output, run.output
    # where the disk fills first (an output, or the record of one) depends on the bytes the run wrote before
    said = ("1 task (0): storage full", "1 task (0): cannot record ")
    assert any(line in run.output for line in said), run.output
    assert f"free space, then: hpcmarker retry {paths.run_id}" in run.output
    assert f"next: hpcmarker retry {paths.run_id}" in run.output
    first = {p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*.md")}
    assert 0 < len(first) < len(expected)  # some fitted, some did not
    for name, (data, _mtime) in first.items():
        assert data == expected[name]  # what was written before the disk filled is whole
    records = manifest_records(paths)
    full = [r for r in records if r.status != "ok"]
    faultkit.note(
        wrong_status=sum("No space left on device" not in (r.error or "") for r in full),
        detail=f"{len(first)} of {len(expected)} documents fitted; {len(full)} items failed: disk full",
    )
    assert all("No space left on device" in (r.error or "") for r in full), [r.error for r in full]
    task_log = "".join(p.read_text() for p in paths.jobs.glob("*_log.*"))
    assert "output storage is full" in task_log or "cannot record" in task_log

    filler.unlink()  # space again: retry finishes the run, converting nothing twice
    result = invoke("retry", paths.run_id)
    assert result.exit_code == 0, result.output
    records = manifest_records(paths)
    latest = latest_by_item(records)
    final = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.md")}
    faultkit.note(
        inputs=len(rows[10:30]),
        items=len(latest),
        healed_by="retry",
        lost=sum(r.status != "ok" for r in latest.values()) + len(set(expected) - set(final)),
        twice=sum(sum(r.status == "ok" and r.item_id == i for r in records) > 1 for i in latest),
        mismatches=sum(final[n] != d for n, d in expected.items() if n in final),
        half_written=len(set(final) - set(expected)),
    )
    assert {r.status for r in latest.values()} == {"ok"} and len(latest) == len(expected)
    assert all(sum(r.status == "ok" and r.item_id == i for r in records) == 1 for i in latest)  # once each
    assert final == expected
    for name, (_data, mtime) in first.items():
        assert (out / name).stat().st_mtime_ns == mtime  # earlier outputs were not rewritten
    summary = json.loads(paths.summary.read_text())
    assert summary["ok"] == len(expected) and not summary["missing"]
