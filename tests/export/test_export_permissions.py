"""An export is as private as the run's outputs (issue 19, item 8): its folder, shards and manifest follow the
run's --permissions (private by default), or the export's own --permissions."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from runkit import invoke
from synthetic_export import make_export_run

from hpc_marker.runstate.permissions import PERMISSIONS


def modes(folder: Path) -> dict[str, int]:
    """Permission bits of the folder ("") and of each file in it."""
    return {
        "": stat.S_IMODE(folder.stat().st_mode),
        **{path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()},
    }


@pytest.fixture(autouse=True)
def open_umask():
    """The shell's usual umask (022), under which a file nobody restricts is world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.parametrize(
    ("run_permissions", "asked", "folder_mode", "file_mode"),
    [
        ("private", None, 0o700, 0o600),  # the default of submit
        ("group", None, 0o750, 0o640),
        ("world", None, 0o755, 0o644),
        ("private", "group", 0o750, 0o640),  # export --permissions wins
    ],
)
def test_an_export_follows_the_runs_permissions(tmp_path, run_permissions, asked, folder_mode, file_mode):
    paths, _expected = make_export_run(tmp_path, 30)
    paths.save_record(replace(paths.load_record(), umask=PERMISSIONS[run_permissions]))
    args = ["export", paths.root, "--format", "parquet", "--to", tmp_path / "ds" / "nested", "--rows-per-shard", "10"]
    result = invoke(*args, *(["--permissions", asked] if asked else []))
    assert result.exit_code == 0, result.output
    found = modes(tmp_path / "ds" / "nested")
    assert len(found) == 5 and set(found.values()) == {folder_mode, file_mode}, {k: oct(v) for k, v in found.items()}
    assert found[""] == folder_mode and stat.S_IMODE((tmp_path / "ds").stat().st_mode) == folder_mode
    assert os.umask(0o022) == 0o022  # the process's umask is given back


def test_a_bad_permissions_value_is_refused(tmp_path):
    paths, _expected = make_export_run(tmp_path, 3)
    result = invoke("export", paths.root, "--format", "jsonl", "--to", tmp_path / "ds", "--permissions", "all")
    assert result.exit_code == 2 and not (tmp_path / "ds").exists()
