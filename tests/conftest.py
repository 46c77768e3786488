"""Shared fixtures: sample PDFs, generated bad inputs, an isolated run index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "pdfs"
CORPUS = ROOT.parent / "shared" / "corpus" / "pdfs"


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Each test gets its own run index, never the user's."""
    monkeypatch.setenv("HPCMARKER_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def sample_pdfs(tmp_path) -> Path:
    """A copy of the shipped sample PDFs (en/, zh/)."""
    target = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, target)
    return target


def make_bad_pdfs(folder: Path) -> dict[str, str]:
    """Write one file per kind of bad input; returns relpath -> expected reason fragment."""
    from pypdf import PdfReader, PdfWriter

    folder.mkdir(parents=True, exist_ok=True)
    good = (EXAMPLES / "en" / "upref.pdf").read_bytes()
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "not-a-pdf.pdf").write_text("this is a text file, not a PDF\n")
    (folder / "truncated.pdf").write_bytes(good[: len(good) // 3])
    (folder / "header-only.pdf").write_bytes(b"%PDF-1.7\n")
    writer = PdfWriter()
    for page in PdfReader(EXAMPLES / "en" / "upref.pdf").pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with (folder / "encrypted.pdf").open("wb") as fh:
        writer.write(fh)
    return {
        "empty.pdf": "empty file",
        "not-a-pdf.pdf": "not a readable PDF",
        "truncated.pdf": "not a readable PDF",
        "header-only.pdf": "not a readable PDF",
        "encrypted.pdf": "encrypted",
    }
