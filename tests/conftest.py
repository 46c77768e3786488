"""Shared fixtures: sample PDFs, generated bad inputs, an isolated run index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from inputs import Expected, make_bad_pdfs  # noqa: F401 - shared by the tests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "pdfs"
CORPUS = ROOT.parent / "shared" / "corpus" / "pdfs"


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Each test gets its own run index and page-count cache, never the user's."""
    monkeypatch.setenv("HPCMARKER_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def sample_pdfs(tmp_path) -> Path:
    """A copy of the shipped sample PDFs (en/, zh/)."""
    target = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, target)
    return target
