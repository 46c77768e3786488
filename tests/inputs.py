"""The tests' inputs: where the sample PDFs and the shared corpus are, and generated hostile inputs (bad
PDFs with their expected status, slow and memory-hungry PDFs, good PDFs under hostile names). Everything
hostile is generated here; nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
EXAMPLES = ROOT / "examples" / "pdfs"  # the shipped samples: 6 PDFs, 11 pages
CORPUS = ROOT.parent / "shared" / "corpus" / "pdfs"  # the shared corpus (tests marked `corpus`)
PAGES_CSV = CORPUS.parent / "pages.csv"  # its page count per PDF


@dataclass(frozen=True)
class Expected:
    status: str  # manifest status: failed, encrypted, timeout
    reason: str  # a fragment of the one-line reason


def _serialize(objs: list[bytes]) -> bytes:
    """Numbered objects (1: the catalog) as a PDF file with its cross-reference table."""
    out, offsets = bytearray(b"%PDF-1.7\n"), []
    for number, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _scattered_glyphs(glyphs: int) -> bytes:
    """A content stream of `glyphs` single characters, each at its own position."""
    return (
        b"BT /F1 1 Tf "
        + b"".join(b"1 0 0 1 %d %d Tm (x) Tj " % (i % 600, (i // 600) % 780) for i in range(glyphs))
        + b"ET"
    )


def raw_pdf(content: bytes | None) -> bytes:
    """A minimal hand-built PDF: one page drawing `content` (a content stream), or no pages (None)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    if content is None:
        objs.append(b"<< /Type /Pages /Kids [] /Count 0 >>")
    else:
        packed = zlib.compress(content, 9)
        objs += [
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
            b"/Contents 4 0 R >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    return _serialize(objs)


def pathological_pdf(glyphs: int) -> bytes:
    """One page of `glyphs` single characters, each at its own position: small on disk, but text
    extraction takes seconds and hundreds of MB (400,000 glyphs: about 8 s and 700 MB here)."""
    return raw_pdf(_scattered_glyphs(glyphs))


def book_with_pathological_page(pages: int, bad_page: int, glyphs: int) -> bytes:
    """`pages` pages, each with one line of text ("Page <n> of the book."), but page `bad_page` (0-based)
    carries `glyphs` characters each at its own position (pathological_pdf's page): text extraction
    takes milliseconds per page and seconds for that one."""
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", font]  # 2: the page tree, written once the pages are
    kids = []
    for page in range(pages):
        if page == bad_page:
            content = _scattered_glyphs(glyphs)
        else:
            content = b"BT /F1 12 Tf 72 720 Td (Page %d of the book.) Tj ET" % (page + 1)
        packed = zlib.compress(content, 9)
        objs.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream")
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % len(objs)
        )
        kids.append(len(objs))
    objs[1] = b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % pages
    return _serialize(objs)


def scanned_pdf(pages: int) -> bytes:
    """`pages` pages that are each one grey image and no text, as a scanner makes them: no text layer at all."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    image = b"\x80\x40\x40\x80"  # 2x2 grey pixels
    objs.append(
        b"<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray /BitsPerComponent 8 "
        b"/Length %d >>\nstream\n" % len(image) + image + b"\nendstream"
    )
    kids = []
    for _ in range(pages):
        content = b"q 612 0 0 792 0 0 cm /Im1 Do Q"
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % len(objs)
        )
        kids.append(len(objs))
    objs[1] = b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % pages
    return _serialize(objs)


def _encrypted(user_password: str) -> bytes:
    from io import BytesIO

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(EXAMPLES / "en" / "upref.pdf").pages:
        writer.add_page(page)
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    buffer = BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def make_bad_pdfs(folder: Path) -> dict[str, Expected]:
    """Write one file per kind of unreadable input; returns relpath -> Expected."""
    folder.mkdir(parents=True, exist_ok=True)
    good = (EXAMPLES / "en" / "upref.pdf").read_bytes()
    files = {
        "empty.pdf": (b"", Expected("failed", "empty file")),
        "not-a-pdf.pdf": (b"this is a text file, not a PDF\n", Expected("failed", "not a readable PDF")),
        "truncated.pdf": (good[: len(good) // 3], Expected("failed", "not a readable PDF")),
        "header-only.pdf": (b"%PDF-1.7\n", Expected("failed", "not a readable PDF")),
        "zero-pages.pdf": (raw_pdf(None), Expected("failed", "not a readable PDF")),  # PDFium refuses it
        "encrypted.pdf": (_encrypted("secret"), Expected("encrypted", "password is required")),
    }
    for name, (data, _expected) in files.items():
        (folder / name).write_bytes(data)
    return {name: expected for name, (_data, expected) in files.items()}


def make_owner_password_pdf(path: Path) -> None:
    """Encrypted with an owner password only: opens without a password, so it converts normally."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encrypted(""))


HOSTILE_DIR = "odd $(touch pwned) `id` 'q' \"dq\""
HOSTILE_NAMES = ("with space.PDF", "new\nline.pdf", "文档 中文.pdf", "semi;colon & amp.Pdf")


def make_hostile_names(folder: Path, source: Path) -> list[str]:
    """Copies of `source` under hostile names, a symlink to a folder (followed once), a symlink loop,
    a second name for one file (converted once), and same-named PDFs in two folders.
    Returns the relpaths that must each get one output (the duplicate name is not among them)."""
    target = folder / HOSTILE_DIR
    target.mkdir(parents=True)
    expected = []
    for name in HOSTILE_NAMES:
        shutil.copy(source, target / name)
        expected.append(f"{HOSTILE_DIR}/{name}")
    for sub in ("a", "b"):
        (folder / "same" / sub).mkdir(parents=True)
        shutil.copy(source, folder / "same" / sub / "paper.pdf")
        expected.append(f"same/{sub}/paper.pdf")
    os.symlink(folder / "same" / "a" / "paper.pdf", folder / "same" / "zz-duplicate.pdf")  # a second name
    os.symlink(folder, folder / "same" / "loop")  # a loop back to the top: not followed twice
    (folder / "linked-real").mkdir()
    shutil.copy(source, folder / "linked-real" / "only-here.pdf")
    os.symlink(folder / "linked-real", folder / "a-link")  # a folder reached by a link sorts first
    expected.append("a-link/only-here.pdf")
    return expected
