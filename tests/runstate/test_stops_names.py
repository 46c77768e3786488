"""A task's stop record (runstate/stops.py) and the shortened side-file names (runstate/output.py)."""

from __future__ import annotations

from pathlib import Path

from hpc_marker.planning.plan import WorkItem, split_items
from hpc_marker.runstate.output import (
    META_SUFFIX,
    NAME_MAX,
    fit_name,
    long_names,
    meta_file,
)
from hpc_marker.runstate.stops import RECORD_BYTES, RUNNING, StopRecord, read_stops


def test_a_stop_record_keeps_its_size_and_says_why(tmp_path):
    record = StopRecord(tmp_path, 3, job_id="7_3", host="n1")
    assert read_stops(tmp_path)[3].cause == RUNNING
    size = (tmp_path / "stop-3.json").stat().st_size
    stop = record.stop("engine", "引擎不能启动 " * 400 + "\nsecond line")  # long, multi-byte, two lines
    assert size == RECORD_BYTES == (tmp_path / "stop-3.json").stat().st_size  # in place: a full disk cannot refuse it
    read = read_stops(tmp_path)[3]
    assert read.cause == "engine" and read.job_id == "7_3" and read.detail.startswith("引擎不能启动")
    assert "\n" not in read.detail and stop.stopped is not None


def test_a_stop_record_says_whether_an_earlier_run_of_its_task_left_one(tmp_path):
    first = StopRecord(tmp_path, 3, job_id="7_3", host="n1")
    assert first.first_start
    first.stop("done")
    again = StopRecord(tmp_path, 3, job_id="8_3", host="n2")  # requeued or resumed: the task's second start
    assert not again.first_start
    assert read_stops(tmp_path)[3].cause == RUNNING and (tmp_path / "stop-3.json").stat().st_size == RECORD_BYTES


def test_long_names_get_a_shortened_side_file_that_stays_distinct():
    long_a, long_b = "a" * 250 + "x", "a" * 250 + "y"
    assert fit_name("short", META_SUFFIX) == "short_meta.json"
    names = {fit_name(stem, META_SUFFIX) for stem in (long_a, long_b)}
    assert len(names) == 2 and all(len(n.encode()) <= NAME_MAX and n.endswith(META_SUFFIX) for n in names)
    wide = "文" * 84  # 252 bytes: fits as a name, not with _meta.json after it
    assert len(fit_name(wide, META_SUFFIX).encode()) <= NAME_MAX
    assert long_names(["ok.pdf", f"dir/{long_a}.pdf", f"{wide}.pdf"]) == [f"dir/{long_a}.pdf", f"{wide}.pdf"]
    assert meta_file(Path("/x"), "short") == Path("/x/short_meta.json")


def test_parts_of_a_split_pdf_keep_its_scan_status():
    parts = split_items([WorkItem(item_id="d", pdf="big.pdf", page_start=0, page_stop=100, doc_id="d")], 40)
    assert len(parts) == 3 and {p.scan_status for p in parts} == {"ok"}
