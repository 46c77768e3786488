"""Follow-up runs (`retry --select`): what is selected, which settings change, and the document's current format."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from runkit import bare_record

from hpc_marker.engines import EngineOptions, output_settings
from hpc_marker.planning.scan import ScannedPdf
from hpc_marker.runstate.documents import DocumentState
from hpc_marker.runstate.output import document_file, meta_file
from hpc_marker.runstate.record import ParentRun, RunRecord
from hpc_marker.submission.followup import (
    RunOverrides,
    followup_request,
    is_selected,
    parse_selectors,
    request_from_record,
)
from hpc_marker.submission.outputs import output_is_current
from hpc_marker.submission.request import LaunchError


def doc(
    status: str = "ok", pages: int = 10, empty: list[int] | None = None, garbled: list[int] | None = None
) -> DocumentState:
    checked = empty is not None or garbled is not None
    return DocumentState(
        pdf="a.pdf",
        status=status,
        error=None,
        items=1,
        pages=pages,
        page_start=0,
        page_stop=pages,
        engine="text",
        seconds=1.0,
        finished=1.0,
        degraded=None,
        checked_pages=pages if checked else 0,
        empty_pages=empty if checked else None,
        garbled_pages=garbled if checked else None,
    )


def test_selectors():
    assert is_selected(doc(garbled=[0]), "garbled", 0.1) and not is_selected(doc(garbled=[0]), "garbled", 0.2)
    assert is_selected(doc(empty=[0, 1], garbled=[]), "no-text", 0.2)
    assert not is_selected(doc(empty=[], garbled=[]), "no-text", 0.0)  # nothing flagged: never selected
    assert not is_selected(doc(), "garbled", 0.0)  # not checked
    assert not is_selected(doc("failed", garbled=[1]), "garbled", 0.0)  # not ok: that is --select failed
    assert [
        s for s in ("ok", "failed", "timeout", "encrypted", "incomplete") if is_selected(doc(s), "failed", 0.1)
    ] == ["failed", "timeout", "incomplete"]


def test_select_takes_a_comma_separated_list():
    assert parse_selectors("no-text,garbled") == ("no-text", "garbled")
    assert parse_selectors(" failed , partial,failed") == ("failed", "partial")
    for wrong in ("no-text|garbled", "", "no-text,,garbled", "ocr"):
        with pytest.raises(LaunchError, match="choose one or more of no-text, garbled, partial, failed"):
            parse_selectors(wrong)


def _record(**changes) -> RunRecord:
    base = bare_record(
        run_id="first",
        created=0,
        pdfs_root="/data/pdfs",
        out_dir="/data/md",
        engine_options=EngineOptions(paginate=False, output_format="json"),
        executor="local",
        tasks=4,
        gpus=4,
        workers_per_gpu=0,
        cpus_per_task=2,
        time_limit="01:00:00",
        lease_seconds=60.0,
        item_timeout="30/page",
        umask=0o027,
        partition="cpu",
        mem="8G",
        worker_memory="4G",
        llm=None,
    )
    return replace(base, **changes)


def test_a_follow_up_keeps_the_first_runs_settings_but_those_given():
    record = _record()
    same = request_from_record(record)
    assert (same.engine, same.gpus, same.partition, same.mem, same.time_limit, same.cpus_per_task) == (
        "text",
        4,
        "cpu",
        "8G",
        "01:00:00",
        2,
    )
    assert (same.permissions, same.item_timeout, same.worker_memory, same.lease_seconds) == (
        "group",
        "30/page",
        "4G",
        60.0,
    )
    assert same.engine_options == EngineOptions(paginate=False, output_format="json")
    overrides = RunOverrides(engine="marker", force_ocr=True, output_format="markdown", run_id="ocr")
    request = followup_request(record, ["b.pdf", "a.pdf"], ("garbled",), 0.1, overrides)
    assert request.engine == "marker" and request.run_id == "ocr" and request.worker_memory is None
    assert request.engine_options == EngineOptions(paginate=False, output_format="markdown", force_ocr=True)
    assert (request.only, request.force, request.gpus, request.partition) == (("b.pdf", "a.pdf"), True, 4, "cpu")
    assert request.parent == ParentRun(run_id="first", select="garbled", min_share=0.1, documents=2)
    kept = RunOverrides(output_format="markdown").apply(same)
    assert kept.worker_memory == "4G" and kept.engine == "text"  # the same engine keeps its memory cap


def test_every_override_field_is_an_engine_option_or_a_request_field():
    from dataclasses import fields

    from hpc_marker.submission.request import SubmitRequest

    known = {f.name for f in fields(EngineOptions)} | {f.name for f in fields(SubmitRequest)}
    assert {f.name for f in fields(RunOverrides)} <= known


@pytest.mark.parametrize("fmt", ["markdown", "json", "html", "chunks"])
def test_output_is_current_looks_for_the_runs_format(tmp_path, fmt):
    pdf_path = tmp_path / "pdfs" / "a.pdf"
    pdf_path.parent.mkdir()
    pdf_path.write_bytes(b"%PDF-1.4 tiny")
    stat = pdf_path.stat()
    pdf = ScannedPdf("a.pdf", pdf_path, stat.st_size, 1)
    out = tmp_path / "out"
    target = document_file(out, "a.pdf", fmt)
    target.parent.mkdir(parents=True)
    target.write_text("x")

    def settings(output_format: str) -> dict:
        return output_settings("text", EngineOptions(output_format=output_format))

    source = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "format": fmt, "settings": settings(fmt)}
    meta_file(target.parent, "a").write_text(json.dumps({"hpcmarker_source": source}))
    others = [f for f in ("markdown", "json", "html", "chunks") if f != fmt]
    assert output_is_current(out, pdf, settings(fmt))
    assert not any(output_is_current(out, pdf, settings(other)) for other in others)  # json, chunks: both .json
    partial = {"hpcmarker_source": source, "lost_pages": [{"page": 3, "reason": "timeout"}]}
    meta_file(target.parent, "a").write_text(json.dumps(partial))
    assert not output_is_current(out, pdf, settings(fmt))  # a partial document is converted again


def test_an_output_recorded_with_the_retired_languages_option_is_still_current(tmp_path):
    """--languages is gone (no supported marker takes it): documents whose settings still record
    `languages: []` are not converted again for it."""
    pdf_path = tmp_path / "pdfs" / "a.pdf"
    pdf_path.parent.mkdir()
    pdf_path.write_bytes(b"%PDF-1.4 tiny")
    stat = pdf_path.stat()
    out = tmp_path / "out"
    target = document_file(out, "a.pdf", "markdown")
    target.parent.mkdir(parents=True)
    target.write_text("x")
    wanted = output_settings("marker", EngineOptions())
    for languages, current in (([], True), (["de"], False)):
        source = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "settings": dict(wanted, languages=languages)}
        meta_file(target.parent, "a").write_text(json.dumps({"hpcmarker_source": source}))
        assert output_is_current(out, ScannedPdf("a.pdf", pdf_path, stat.st_size, 1), wanted) is current
