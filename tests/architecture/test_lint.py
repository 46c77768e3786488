"""The lint and format gate (issue 20): `ruff check` and `ruff format --check` pass on the whole repository,
with the config in pyproject.toml ([tool.ruff]). The fast tier runs this, and .ci/run runs ruff itself first.

Fix a finding by changing the code; a `# noqa: RULE` only where the rule is wrong for that line, with the
reason beside it. `ruff format FILES` and `ruff check --fix FILES` do most of the work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.ruff  # skipped where ruff is not installed, unless HPCMARKER_REQUIRE names ruff


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_check_is_clean():
    done = ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, f"ruff check found:\n{done.stdout}{done.stderr}"


def test_ruff_format_is_clean():
    done = ruff("format", "--no-cache", "--check", ".")
    assert done.returncode == 0, f"not formatted (run: ruff format FILES):\n{done.stdout}{done.stderr}"
