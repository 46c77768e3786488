"""Templates: snapshot of every shipped template role, quoting, unknown variables."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from runkit import bare_record

from hpc_marker.cli.admin import sample_contexts as admin_sample_contexts
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import JobSettings
from hpc_marker.submission.scripts import script_contexts
from hpc_marker.submission.templates import ROLES, TemplateError, available_templates, render_role

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"
UPDATE = os.environ.get("HPCMARKER_UPDATE_SNAPSHOTS") == "1"


def sample_contexts(run_dir: str | None = None, profile: str = "generic") -> dict:
    contexts = admin_sample_contexts(profile)
    if run_dir is not None:  # the same run in another folder
        record = bare_record(
            run_id="r1",
            pdfs_root="/data/pdfs",
            tasks=4,
            gpus=4,
            cpus_per_task=4,
            partition="gpu",
            mem="32G",
            time_limit="04:00:00",
            job_settings=JobSettings(gres="gpu:1"),
        )
        contexts = script_contexts(RunPaths(Path(run_dir)), record, python="/opt/venv/bin/python")
    return contexts


SHIPPED_PROFILES = ["generic", "a100-account", "apptainer"]
RERECORD = "HPCMARKER_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/submission/test_render.py"


def check_snapshot(text: str, snapshot: Path, update: bool) -> None:
    """`text` is the golden `snapshot`; a missing one fails (it is written only with `update`, on request)."""
    if update:
        snapshot.write_text(text)
    assert snapshot.exists(), f"{snapshot.name}: no golden snapshot; record it with {RERECORD} and review it"
    assert text == snapshot.read_text(), (
        f"{snapshot.name}: rendering changed; if intended, re-record with {RERECORD} and review the diff"
    )


@pytest.mark.parametrize("profile", SHIPPED_PROFILES)
@pytest.mark.parametrize("role", ROLES)
def test_shipped_templates_match_snapshots(profile, role):
    contexts = admin_sample_contexts(profile)
    text = render_role(contexts["_template"], role, contexts[role])
    check_snapshot(text, SNAPSHOTS / f"{profile}-{role}.sbatch", UPDATE)
    assert subprocess.run(["bash", "-n"], input=text, text=True, check=False).returncode == 0


def test_a_missing_golden_snapshot_fails_and_is_not_written(tmp_path, monkeypatch):
    golden = SNAPSHOTS / "generic-convert.sbatch"
    monkeypatch.setitem(globals(), "SNAPSHOTS", tmp_path)
    with pytest.raises(AssertionError, match="no golden snapshot"):
        test_shipped_templates_match_snapshots("generic", "convert")
    assert not list(tmp_path.iterdir())
    monkeypatch.setitem(globals(), "UPDATE", True)  # HPCMARKER_UPDATE_SNAPSHOTS=1 records it
    test_shipped_templates_match_snapshots("generic", "convert")
    assert (tmp_path / "generic-convert.sbatch").read_text() == golden.read_text()


def test_every_shipped_template_is_used_by_a_shipped_profile():
    used = {admin_sample_contexts(p)["_template"] for p in SHIPPED_PROFILES}
    assert used == set(available_templates())


def test_hostile_paths_are_quoted_and_nothing_runs(tmp_path):
    evil = tmp_path / "x'; touch PWNED; echo '$(touch PWNED2) `touch PWNED3`"
    text = render_role("generic", "convert", sample_contexts(str(evil))["convert"])
    # run the script's shell text with every external command replaced by a harmless echo
    script = text.replace("#!/bin/bash", "#!/bin/bash\nset -u\nfunction srun { :; }")
    done = subprocess.run(
        ["bash", "-c", script.replace("/opt/venv/bin/python", "echo")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("PWNED*"))
    assert str(evil) in done.stdout  # the path arrived intact, as one argument


def test_unknown_variable_is_an_error_listing_valid_ones(tmp_path, monkeypatch):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "convert.sbatch.j2").write_text("#!/bin/bash\n#SBATCH --account={{ acount }}\n")
    monkeypatch.setenv("HPCMARKER_TEMPLATE_PATH", str(tmp_path))
    with pytest.raises(TemplateError, match=r"'acount' is undefined; valid variables: .*cpus_per_task"):
        render_role("custom", "convert", sample_contexts()["convert"])


def test_unknown_template_lists_available():
    with pytest.raises(TemplateError, match=r"unknown template 'nope'; available templates: .*generic"):
        render_role("nope", "convert", {})


def test_the_collector_asks_for_memory_by_the_run_size():
    from hpc_marker.submission.scripts import collect_memory

    assert collect_memory(57) == "2G" and collect_memory(1_000_000) == "2G" and collect_memory(5_000_000) == "3G"
    assert collect_memory(10_000_000) == "4G"  # 21G when the collector held the whole manifest frame, then 6G
    contexts = sample_contexts("/runs/r1")
    assert contexts["collect"]["mem"] == "2G" and "#SBATCH --mem=2G" in render_role(
        "generic", "collect", contexts["collect"]
    )
