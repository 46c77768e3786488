"""The report of large runs stays under 10 MB and still adds up: a synthetic run of 200,000
manifest records over 64 tasks (synthetic_run.py) gets the timeline per task and time bucket and
cut tables; the largest run drawn a bar per record, with long names and errors, stays bounded
too; the LLM timeline is bucketed. Times are measured by synthetic_run.py, not here."""

from __future__ import annotations

import pytest
from pagecheck import PLOTS, SECTIONS, array, check_page, plot_data, rendered
from synthetic_run import HOSTILE_HOST, HOSTILE_PDF, make_run

from hpc_marker.report import write_report
from hpc_marker.report.frames import llm_timeline_frame
from hpc_marker.report.page import Limits


def test_llm_timeline_is_bounded():
    lines = [{"ts": 1000.0 + 5 * i, "in_flight": i % 7, "tokens_out_per_s": float(i % 50)} for i in range(20_000)]
    frame = llm_timeline_frame({"timeline": lines}, points=240)
    assert 100 <= len(frame) <= 241 and frame["in_flight"].max() == 6  # peaks kept
    assert frame["tokens_out_per_s"].mean() == pytest.approx(24.5, abs=0.5)
    assert len(llm_timeline_frame({"timeline": lines[:50]}, points=240)) == 50  # short: as it is


def test_a_bar_per_record_up_to_the_limit_stays_bounded(tmp_path):
    """The largest run still drawn a bar per record, with ~400-character paths and errors: under 10 MB."""
    limit = Limits().detail_records
    make_run(tmp_path / "run", records=limit, tasks=16, long_strings=True)
    report = write_report(tmp_path / "run")
    text = report.read_text(encoding="utf-8")
    assert report.stat().st_size < 10_000_000, f"report.html is {report.stat().st_size / 1e6:.1f} MB"
    bars = [trace for trace in plot_data(text, "timeline-plot") if trace["type"] != "scatter"]  # idle rows: points
    assert {trace["type"] for trace in bars} == {"bar"} and "a long message" in text
    assert sum(len(array(trace["base"])) for trace in bars) == limit  # a bar each


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """A synthetic run of 200,000 manifest records over 64 tasks (not collected), and its report."""
    root = tmp_path_factory.mktemp("large") / "run-large"
    expected = make_run(root, records=200_000, tasks=64)
    return {"root": root, "expected": expected, "report": write_report(root)}


@pytest.mark.slow
def test_large_run_report_is_bounded_and_adds_up(large):
    expected, report = large["expected"], large["report"]
    size = report.stat().st_size
    assert size < 10_000_000, f"report.html is {size / 1e6:.1f} MB"
    text = report.read_text(encoding="utf-8")
    page = check_page(text)
    assert set(SECTIONS) | set(PLOTS) <= page.ids
    assert f"{expected.ok:,} ok · {expected.failed:,} failed" in text
    assert f"{expected.missing:,} missing of {expected.items:,}" in text
    assert f"{expected.pages_ok:,}" in text and f"{expected.records:,} attempts" in text
    assert f'<div class="k">tasks</div><div class="v">{expected.tasks}</div>' in text
    heatmap, *marks = plot_data(text, "timeline-plot")
    assert heatmap["type"] == "heatmap" and len(heatmap["y"]) == expected.tasks
    assert heatmap["y"][-1] == f"task {expected.idle_task} / no item"  # the idle task keeps its (empty) row
    assert heatmap["y"][0] == "task 0 / node&lt;b&gt;00&lt;/b&gt; / GPU 0"  # escaped for plotly's markup
    cells = array(heatmap["customdata"])  # per task and bucket: pages, ok, degraded, failed
    assert cells.shape[0] == expected.tasks and cells.shape[1] <= 121
    assert cells[..., 0].sum() == pytest.approx(expected.pages_ok, rel=1e-3)  # every page in some cell
    assert cells[..., 1].sum() + cells[..., 2].sum() == expected.ok and cells[..., 2].sum() == expected.degraded
    assert cells[..., 3].sum() == array(marks[0]["customdata"]).sum() == expected.records - expected.ok
    rows = page.cells["failures-table"]
    assert len(rows) == Limits().table_rows * 7 and f"Failures ({expected.failed + expected.missing:,})" in text
    assert f"… and {expected.failed + expected.missing - Limits().table_rows:,} more not shown here" in text
    assert rows[0] == HOSTILE_PDF  # sorted first, shown as text
    assert HOSTILE_PDF not in text and HOSTILE_HOST not in text and "<error>" not in text
    assert "node&lt;b&gt;00&lt;/b&gt;" in text  # the host name, escaped in the table and the plot labels
    assert len(page.cells["slowest-table"]) == 10 * 5


@pytest.mark.browser
@pytest.mark.slow
def test_large_run_report_renders_in_a_real_browser(large, tmp_path, chromium):
    shot = (
        tmp_path / "large.png"
    )  # drawn by the browser that checks the page; look at it: pytest --basetemp=DIR keeps it
    page = rendered(chromium, large["report"], tmp_path, PLOTS, screenshot=shot)
    assert "hm" in page.classes  # the heatmap drawn
    assert shot.stat().st_size > 50_000
