"""Scanning at scale on a login node: the page-count cache (path, size, mtime), low-priority workers, the
progress bar (shown only when asked or on a terminal). No timings are asserted: what is read is counted."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES
from inputs import raw_pdf

from hpc_marker.cli import cli
from hpc_marker.planning import scan, scancache
from hpc_marker.planning.scan import scan_pdfs
from hpc_marker.planning.scancache import Counted, PageCountCache, cache_file


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The PDFs whose pages the scan really counts (in this process: workers=1)."""
    seen: list[str] = []
    real = scan.count_pages

    def counting(path):
        seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(scan, "count_pages", counting)
    return seen


def as_tuples(scanned) -> list[tuple]:
    return [(s.relpath, s.bytes, s.pages, s.error, s.status) for s in scanned]


def test_a_second_scan_reads_only_what_changed(sample_pdfs, reads):
    first = scan_pdfs(sample_pdfs, cache=True)
    assert len(reads) == 6
    reads.clear()
    written = cache_file(sample_pdfs).stat().st_ino
    assert as_tuples(scan_pdfs(sample_pdfs, cache=True)) == as_tuples(first) and reads == []
    assert cache_file(sample_pdfs).stat().st_ino == written  # nothing changed: not rewritten

    (sample_pdfs / "zh" / "6-7b.pdf").unlink()  # gone
    shutil.copy(EXAMPLES / "en" / "upref.pdf", sample_pdfs / "new.pdf")  # added
    changed = sample_pdfs / "en" / "ltnews07.pdf"
    changed.write_bytes((EXAMPLES / "en" / "upref.pdf").read_bytes())  # rewritten: other size, other pages
    touched = sample_pdfs / "en" / "ltxtable.pdf"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # same size, new mtime
    again = scan_pdfs(sample_pdfs, cache=True)
    assert sorted(reads) == ["ltnews07.pdf", "ltxtable.pdf", "new.pdf"]
    assert as_tuples(again) == as_tuples(scan_pdfs(sample_pdfs))  # the same as a scan without the cache
    assert {s.relpath: s.pages for s in again}["en/ltnews07.pdf"] == 2
    kept = json.loads(gzip.decompress(cache_file(sample_pdfs).read_bytes()))
    assert sorted(kept["relpath"]) == sorted(s.relpath for s in again)  # the PDF gone dropped out
    (sample_pdfs / "new.pdf").unlink()  # only a removal: nothing to read, the cache still follows
    reads.clear()
    assert len(scan_pdfs(sample_pdfs, cache=True)) == 5 and reads == []
    assert "new.pdf" not in json.loads(gzip.decompress(cache_file(sample_pdfs).read_bytes()))["relpath"]


def test_the_cache_is_one_private_file_per_folder_in_the_users_cache_folder(sample_pdfs, tmp_path, monkeypatch):
    scan_pdfs(sample_pdfs)  # the library's default: no cache, nothing written
    home = tmp_path / "home"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(home))
    assert not (home / ".cache").exists()
    scan_pdfs(sample_pdfs, cache=True)
    files = list((home / ".cache" / "hpcmarker" / "scan").iterdir())
    assert files == [cache_file(sample_pdfs)] and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    scan_pdfs(sample_pdfs / "en", cache=True)
    assert list((tmp_path / "xdg" / "hpcmarker" / "scan").iterdir()) == [cache_file(sample_pdfs / "en")]


def test_an_unusable_cache_is_ignored_and_rewritten(sample_pdfs, reads, monkeypatch):
    scan_pdfs(sample_pdfs, cache=True)
    path = cache_file(sample_pdfs)
    path.write_bytes(path.read_bytes()[:40])  # cut short
    reads.clear()
    scan_pdfs(sample_pdfs, cache=True)
    assert len(reads) == 6
    monkeypatch.setattr(scancache, "_counter", lambda: "pypdfium2 99.0")  # pages counted by another version
    reads.clear()
    scan_pdfs(sample_pdfs, cache=True)
    assert len(reads) == 6
    reads.clear()
    scan_pdfs(sample_pdfs, cache=True)
    assert reads == []


def test_a_read_error_of_this_machine_is_not_remembered_a_bad_pdf_is(tmp_path):
    cache = PageCountCache.load(tmp_path / "pdfs", home=tmp_path / "cache")
    cache.save(
        [
            Counted("a.pdf", 10, 1, 0, "cannot read file (Permission denied)", "failed"),
            Counted("b.pdf", 10, 1, 0, "not a readable PDF (bad xref)", "failed"),
            Counted("c.pdf", 10, 1, 3, None, "ok"),
        ]
    )
    again = PageCountCache.load(tmp_path / "pdfs", home=tmp_path / "cache")
    assert again.get("a.pdf", 10, 1) is None
    assert again.get("b.pdf", 10, 1) == (0, "not a readable PDF (bad xref)", "failed")
    assert again.get("c.pdf", 10, 1) == (3, None, "ok") and again.get("c.pdf", 11, 1) is None


def test_hostile_file_names_survive_the_cache(tmp_path, reads):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    names = [b"caf\xc3\xa9 \xe4\xb8\xad.pdf", b"not-utf8-\xff\xfe.pdf", b'quote"and\\back.pdf']
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
            fh.write(raw_pdf(b"BT ET"))
    first = scan_pdfs(folder, cache=True)
    reads.clear()
    assert as_tuples(scan_pdfs(folder, cache=True)) == as_tuples(first) and reads == []


def niceness(_path):
    """Stands in for count_pages in the pool's processes: reports their niceness as the page count."""
    return os.nice(0), None, "ok"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the scan counts pages in this process")
def test_pages_are_counted_by_low_priority_processes(tmp_path, monkeypatch):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    for i in range(scan._POOL_THRESHOLD + 6):
        (folder / f"{i}.pdf").write_bytes(b"%PDF-1.7\n")
    monkeypatch.setattr(scan, "count_pages", niceness)
    mine = os.nice(0)
    scanned = scan_pdfs(folder, workers=2)
    assert {s.pages for s in scanned} == {min(19, mine + scan.SCAN_NICENESS)}
    assert os.nice(0) == mine  # this process keeps its priority


def test_progress_bar_only_when_asked(sample_pdfs, capsys):
    scan_pdfs(sample_pdfs, cache=True, progress=True)
    first = capsys.readouterr()
    assert "counting pages" in first.err and "6/6" in first.err and first.out == ""
    scan_pdfs(sample_pdfs, cache=True, progress=True)
    assert "(6 cached)" in capsys.readouterr().err
    scan_pdfs(sample_pdfs, cache=True)
    assert capsys.readouterr().err == ""


def test_plan_json_is_not_mixed_with_progress_unless_asked(sample_pdfs):
    quiet = CliRunner().invoke(cli, ["plan", "--pdfs", str(sample_pdfs), "--format", "json"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["tasks"]
    asked = CliRunner().invoke(cli, ["plan", "--pdfs", str(sample_pdfs), "--format", "json", "--progress"])
    assert asked.exit_code == 0 and "counting pages" in asked.stderr and json.loads(asked.stdout)["tasks"]
    bad = CliRunner().invoke(cli, ["plan", "--pdfs", str(sample_pdfs), "--scan-workers", "0"])
    assert bad.exit_code == 2 and "--scan-workers 0: must be at least 1" in bad.output
