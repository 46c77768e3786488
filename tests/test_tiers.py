"""The two tiers of scripts/test.sh, proved on a tiny test file: `--fast` leaves out the tests marked `slow`
or `slurm` and does not point the tests at the local test cluster (no SLURM_CONF) unless HPCMARKER_REQUIRE
names slurm or the caller's -m asks for slurm tests; without `--fast` everything runs, with the cluster."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = """
import os
import pathlib

import pytest


def seen(name):
    pathlib.Path(os.environ["TIERS_SEEN"], name).write_text(os.environ.get("SLURM_CONF", "unset"))


@pytest.mark.slurm
def test_needs_slurm():
    seen("slurm")


@pytest.mark.slow
def test_is_slow():
    seen("slow")


def test_is_fast():
    seen("fast")
"""


def tier(tmp_path: Path, *args: str, require: str | None = None) -> dict[str, str]:
    """`bash scripts/test.sh ARGS` on TINY, beside a test cluster's slurm.conf; the tests that ran, each with
    the SLURM_CONF it saw."""
    (tmp_path / "test_tiny.py").write_text(TINY)
    cluster = tmp_path / "cluster"
    cluster.mkdir(exist_ok=True)
    (cluster / "slurm.conf").write_text("# the test cluster's\n")
    seen = tmp_path / f"seen-{len(list(tmp_path.glob('seen-*')))}"
    seen.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CONF", "HPCMARKER_REQUIRE")}
    env.update(HPCMARKER_SLURM_DIR=str(cluster), TIERS_SEEN=str(seen))
    if require is not None:
        env["HPCMARKER_REQUIRE"] = require
    done = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "test.sh"),
            *args,
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            f"--junitxml={tmp_path / 'junit.xml'}",
            str(tmp_path / "test_tiny.py"),
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ET.parse(tmp_path / "junit.xml").getroot().find(".//failure") is None
    return {path.name: path.read_text() for path in seen.iterdir()}


@pytest.fixture
def conf(tmp_path) -> str:
    return str(tmp_path / "cluster" / "slurm.conf")


def test_the_fast_tier_leaves_out_slow_and_slurm_tests_and_the_cluster(tmp_path, conf):
    assert tier(tmp_path, "--fast") == {"fast": "unset"}
    assert tier(tmp_path, "-q", "--fast", require="browser") == {"fast": "unset"}


def test_the_cluster_is_there_when_slurm_is_asked_for_and_for_everything(tmp_path, conf):
    assert tier(tmp_path, "--fast", "-m", "slurm") == {"slurm": conf}
    assert tier(tmp_path, "--fast", require=" browser, slurm") == {"fast": conf}
    assert tier(tmp_path) == {"fast": conf, "slow": conf, "slurm": conf}


SLURM_FILE = """
import os
import pathlib
import time

import pytest


@pytest.mark.slurm
def test_needs_slurm():
    time.sleep(2)  # both workers are started by now: each file goes to one of them
    pathlib.Path(os.environ["TIERS_SEEN"], pathlib.Path(__file__).stem).write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


@pytest.mark.slow
def test_split_runs_the_slurm_test_files_on_one_worker_per_cluster(tmp_path):
    """With two test clusters in HPCMARKER_SLURM_CONFS, `--split` runs the Slurm tests on two xdist workers, a file
    at a time: the two files, two workers (conftest.cluster_of_worker gives each worker its cluster: test_gate.py)."""
    pytest.importorskip("xdist")
    confs = [str(tmp_path / name / "slurm.conf") for name in ("one", "two")]
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(SLURM_FILE)
    seen = tmp_path / "seen"
    seen.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CONF", "HPCMARKER_REQUIRE")}
    env.update(HPCMARKER_SLURM_CONFS=":".join(confs), TIERS_SEEN=str(seen), HPCMARKER_SLURM_DIR=str(tmp_path))
    argv = ["bash", str(ROOT / "scripts" / "test.sh"), "--split", "-p", "no:cacheprovider"]
    argv += ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)]
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(path.read_text() for path in seen.iterdir()) == ["gw0", "gw1"], done.stdout
