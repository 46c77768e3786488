"""The gate of tests/conftest.py, proved on tiny test files run by a separate pytest (with this suite's
conftest and pyproject.toml): a test marked with a part that is missing is skipped, with the reason;
where HPCMARKER_REQUIRE names that part (or says `all`), it fails instead. Parts are made missing or
present through PATH alone, so these run the same everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TESTS = Path(__file__).resolve().parent
TINY = """
import pytest


@pytest.mark.browser
def test_needs_a_browser():
    pass


@pytest.mark.slurm
def test_needs_slurm():
    pass


def test_needs_nothing():
    pass
"""


def run_tiny(
    tmp_path: Path, require: str | None, path: list[Path], *args: str
) -> tuple[int, dict[str, tuple[str, str]], str]:
    """pytest ARGS on TINY with PATH = `path` only; returns its exit code, each test's outcome and message."""
    (tmp_path / "test_tiny.py").write_text(TINY)
    junit = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if k != "HPCMARKER_REQUIRE"}
    env.update(PATH=os.pathsep.join(map(str, path)), PYTHONPATH=str(TESTS))  # conftest imports its helpers
    if require is not None:
        env["HPCMARKER_REQUIRE"] = require
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "conftest",
            "-c",
            str(TESTS.parent / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            f"--junitxml={junit}",
            *args,
            "test_tiny.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outcomes = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            verdict = next((child for child in case if child.tag in ("skipped", "failure", "error")), None)
            outcomes[case.get("name")] = (
                ("passed", "") if verdict is None else (verdict.tag, verdict.get("message", ""))
            )
    return done.returncode, outcomes, done.stdout + done.stderr


def executable(folder: Path, name: str, script: str = "exit 0") -> None:
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)


def test_a_missing_part_skips_with_its_reason(tmp_path):
    bare = tmp_path / "bin"  # no chromium, no Slurm commands
    bare.mkdir()
    code, outcomes, output = run_tiny(tmp_path, None, [bare])
    assert code == 0, output
    kind, reason = outcomes["test_needs_a_browser"]
    assert kind == "skipped" and reason.startswith("browser missing: none of chromium") and "apt-get" in reason
    kind, reason = outcomes["test_needs_slurm"]
    assert kind == "skipped" and "slurm missing: no `sinfo` on PATH" in reason
    assert outcomes["test_needs_nothing"] == ("passed", "")
    assert "test_tiny.py:5: browser missing" in output  # reported at the test, not in conftest


def test_a_required_part_that_is_missing_fails_and_one_that_is_there_runs(tmp_path):
    bin_dir = tmp_path / "bin"  # a Slurm whose sinfo and sacct answer; no chromium
    bin_dir.mkdir()
    executable(bin_dir, "sinfo")
    executable(bin_dir, "sacct")
    code, outcomes, output = run_tiny(tmp_path, "slurm, browser", [bin_dir])
    assert code == 1, output
    kind, reason = outcomes["test_needs_a_browser"]
    assert kind == "error" and "browser is required (HPCMARKER_REQUIRE) but missing: none of chromium" in reason
    assert outcomes["test_needs_slurm"] == ("passed", "")
    assert outcomes["test_needs_nothing"] == ("passed", "")


def test_a_part_whose_tests_are_deselected_is_not_probed(tmp_path):
    """The fast tier (-m "not slow and not slurm") must not reach a Slurm cluster, even to ask if it is there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sinfo", "sacct"):
        executable(bin_dir, name, f"echo {name} >> {tmp_path / 'probed'}")
    code, outcomes, output = run_tiny(tmp_path, "slurm", [bin_dir], "-m", "not slurm")
    assert code == 0 and "test_needs_slurm" not in outcomes, output
    assert not (tmp_path / "probed").exists()
    run_tiny(tmp_path, "slurm", [bin_dir], "-m", "slurm")
    assert (tmp_path / "probed").exists()  # the probe this test watches for


def test_the_switch_names_parts_or_all():
    from conftest import PARTS, required_parts

    assert required_parts(None) == required_parts("") == frozenset()
    assert required_parts(" slurm, browser ,") == {"slurm", "browser"}
    assert required_parts("all") == required_parts("marker,all") == set(PARTS)
    assert set(PARTS) == {"slurm", "marker", "browser", "root", "corpus", "ruff"}
    ini = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert {line.split(":")[0] for line in ini["markers"]} == {*PARTS, "slow"}  # each registered (--strict-markers)
    with pytest.raises(pytest.UsageError, match="HPCMARKER_REQUIRE=slurm,chrome: no part named chrome; parts: slurm,"):
        required_parts("slurm,chrome")


def test_each_xdist_worker_takes_a_cluster_of_its_own():
    from conftest import cluster_of_worker

    confs = "/c/one/slurm.conf:/c/two/slurm.conf"
    assert [cluster_of_worker(confs, w) for w in ("gw0", "gw1", "gw2")] == [
        "/c/one/slurm.conf",
        "/c/two/slurm.conf",
        "/c/one/slurm.conf",
    ]
    assert cluster_of_worker(confs, None) is None  # not under xdist: SLURM_CONF as it is
    assert cluster_of_worker("", "gw0") is None
