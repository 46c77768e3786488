"""The run report (RUN/report.html) of a real local run with hostile file names: checked statically
(sections, failure rows, escaping, nothing external), in the large-run layout (forced), and in a
real headless Chromium (plots rendered, no console errors, no injected script ran, hover boxes
show names as text). Large runs: test_report_large.py."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import plotly.graph_objects as go
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, make_bad_pdfs
from pagecheck import PLOTS, SECTIONS, Page, browse, check_page, plot_data, plot_layout, rendered, uncaught

from hpc_marker.cli import cli
from hpc_marker.llm.metrics import summarize_metrics
from hpc_marker.planning.store import load_plan
from hpc_marker.report import write_report
from hpc_marker.report.figures import task_labels
from hpc_marker.report.frames import (
    activity_frame,
    failures_frame,
    places_frame,
    records_frame,
    slowest_frame,
    throughput_frame,
)
from hpc_marker.report.page import Limits
from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.manifest import ManifestRecord, read_manifests

IMG = "<img src=x onerror=alert(1)>"  # a broken file with this name: a failure row
SCRIPT_DIR, SCRIPT_FILE = "x<", "script><svg onload=alert(2)>.pdf"  # a good PDF at "x</script><svg ...>.pdf"
MARKUP = "bold <b>&amp; <i>.pdf"  # a good PDF whose name plotly would read as markup if it were not escaped
CUT = Limits(detail_records=0, table_rows=3)
HOVER = """<script>addEventListener("load", () => {  // hover the bar of the item whose hover text has NEEDLE
  const g = document.getElementById("timeline-plot"), c = g.data.findIndex((d) => d.name === "STATE");
  const p = g.data[c].customdata.findIndex((x) => String(x[0]).includes("NEEDLE"));
  Plotly.Fx.hover(g, [{curveNumber: c, pointNumber: p}]);
});</script>"""
HOVER_IMG = HOVER.replace("STATE", "failed").replace("NEEDLE", "onerror")  # the hostile failed item
HOVER_MARKUP = HOVER.replace("STATE", "ok").replace("NEEDLE", "bold")
HOVER_FAILED = """<script>addEventListener("load", () => {  // hover the first failure mark of the aggregated timeline
  const g = document.getElementById("timeline-plot"), c = g.data.findIndex((d) => d.name === "failed attempts");
  Plotly.Fx.hover(g, [{curveNumber: c, pointNumber: 0}]);
});</script>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished local run over the samples, bad PDFs and three hostile names; its report; a copy
    of the run whose summary.json has an LLM section, with its report; and a copy whose report has
    the large-run layout (timeline per task and bucket, tables cut to 3 rows)."""
    tmp = tmp_path_factory.mktemp("report")
    pdfs = tmp / "pdfs"
    shutil.copytree(EXAMPLES, pdfs)
    bad = make_bad_pdfs(pdfs / "bad")
    (pdfs / f"{IMG}.pdf").write_bytes(b"%PDF-1.4 nothing else\n")
    (pdfs / SCRIPT_DIR).mkdir()
    shutil.copy(EXAMPLES / "en" / "upref.pdf", pdfs / SCRIPT_DIR / SCRIPT_FILE)
    shutil.copy(EXAMPLES / "en" / "ltnews07.pdf", pdfs / MARKUP)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPCMARKER_STATE_DIR", str(tmp / "state"))
        result = CliRunner().invoke(
            cli,
            [
                "submit",
                "--pdfs",
                str(pdfs),
                "--out",
                str(tmp / "out"),
                "--engine",
                "text",
                "--executor",
                "local",
                "--gpus",
                "2",
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 3, result.output  # finished, with the bad PDFs failed
        paths = resolve_run(None)
    report = write_report(paths.root)
    llm_root = tmp / "llm-run"
    shutil.copytree(paths.root, llm_root)
    summary = json.loads((llm_root / "summary.json").read_text())
    t0 = summary["collected"] - 60
    lines = [
        {
            "ts": t0 + 5 * i,
            "interval_s": 5.0,
            "in_flight": i % 4,
            "denied": 1,
            "tokens_out_per_s": 10.0 * i,
            "tasks": {
                "0.111": {"requests": 3 * i, "failures": 1, "timeouts": 2, "tokens_out": 50 * i},
                "1.222": {"requests": 2 * i, "client_errors": 1, "tokens_out": 40 * i},
            },
        }
        for i in range(1, 13)
    ]
    summary["llm"] = dict(summarize_metrics(lines), model="qwen-test", service_stopped=[])
    summary["degraded"] = [{"pdf": f"{IMG}.pdf", "pages": "1-2", "reason": "LLM timed out <b>twice</b>"}]
    summary.update(
        headline="incomplete: 3 of 9 items not converted (time limit)",
        next="hpcmarker resume r --time 1:00:00",
        reasons=["2 tasks (0,1): time limit <near> — next: hpcmarker resume r --time 1:00:00"],
    )
    (llm_root / "summary.json").write_text(json.dumps(summary))
    cut_root = tmp / "cut-run"  # the large-run layout, forced: a heatmap per task and bucket, tables cut
    shutil.copytree(paths.root, cut_root)
    return {
        "paths": paths,
        "report": report,
        "bad": sorted(bad),
        "records": read_manifests(paths.manifests).records,
        "llm_report": write_report(llm_root),
        "cut_report": write_report(cut_root, CUT),
    }


def test_report_has_every_section_and_the_failures(run):
    text = run["report"].read_text(encoding="utf-8")
    page = Page(text)
    assert run["report"] == run["paths"].root / "report.html"
    assert set(SECTIONS) | set(PLOTS) <= page.ids
    assert "llm" not in page.ids  # no LLM in this run: no section
    gpu = plot_data(text, "gpu-plot")  # where the GPU-hours went: a stacked bar per task, a trace per part
    assert [trace["name"] for trace in gpu] == ["start-up", "converting", "LLM wait", "draining", "idle"]
    assert "GPU-hours (local clock)" in text.split('id="gpu"', 1)[1]
    verdict = text.split('id="verdict"', 1)[1].split("</p>", 1)[0]  # the collector's verdict, at the top
    assert "run finished: " in verdict and " failed of " in verdict
    assert "cannot be converted by `retry`" in verdict and "next:" not in verdict  # every failure is known at scan
    records = run["records"]
    failed = {r.pdf for r in records if r.status != "ok"}
    assert failed == {f"{IMG}.pdf", *(f"bad/{name}" for name in run["bad"])}
    rows = page.cells["failures-table"]
    assert {cell for cell in rows if cell.endswith(".pdf")} == failed  # pdf column, read back unescaped
    assert any("not a readable PDF" in cell for cell in rows) and any("encrypted" in cell for cell in rows)
    assert f"{SCRIPT_DIR}/{SCRIPT_FILE}" in page.cells["slowest-table"]  # a good PDF with a hostile path
    assert MARKUP in page.cells["slowest-table"]
    assert f"Failures ({len(failed)})" in text
    ok = sum(r.status == "ok" for r in records)
    assert f"{ok} ok · {len(failed)} failed" in text


def test_text_layer_section_lists_the_flagged_documents(run):
    text = run["report"].read_text(encoding="utf-8")
    cells = Page(text).cells["text-layer-table"]
    assert cells[:4] == ["zh/example-single.pdf", "3", "", "1-3"]  # pdf, pages checked, empty, garbled
    assert "3 garbled pages in 1 document" in text and "0 empty · 3 garbled" in text


def test_report_is_one_offline_file_with_every_run_string_escaped(run):
    text = run["report"].read_text(encoding="utf-8")
    check_page(text)
    assert 1_000_000 < len(text.encode()) < 8_000_000
    assert IMG not in text and "<svg onload" not in text and "</script><svg" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in text  # shown, as text


def test_llm_section_when_the_summary_has_one(run):
    text = run["llm_report"].read_text(encoding="utf-8")
    page = Page(text)
    assert {"llm", "llm-plot", "llm-table", "degraded-table"} <= page.ids
    cells = page.cells["llm-table"]
    assert cells[-7:] == ["all", "60", "1", "2", "1", "0", "1080"]  # totals row: requests .. tokens_out
    assert "LLM timed out <b>twice</b>" in page.cells["degraded-table"] and "<b>twice" not in text
    assert "1 denied" in text and "LLM qwen-test" in text
    verdict = text.split('id="verdict"', 1)[1].split("</p>", 1)[0]  # an incomplete run says why, escaped
    assert "run incomplete: 3 of 9 items not converted (time limit)" in verdict
    assert "2 tasks (0,1): time limit &lt;near&gt;" in verdict and "hpcmarker resume r --time 1:00:00" in verdict


def test_every_plot_is_drawn_with_plotlys_white_template(run):
    white = go.Layout(template="plotly_white").template.to_plotly_json()  # as plotly writes it into a figure
    for report, plots in (("report", (*PLOTS, "gpu-plot")), ("llm_report", ("llm-plot",)), ("cut_report", PLOTS)):
        text = run[report].read_text(encoding="utf-8")
        for plot in plots:
            assert plot_layout(text, plot)["template"] == white, (report, plot)


def test_pure_builders(run):
    records, plan = run["records"], load_plan(run["paths"].plan)
    items = records_frame(records)
    flow = throughput_frame(items)
    pages_ok = sum(r.pages for r in records if r.status == "ok")
    assert flow["pages_done"].iloc[-1] == pytest.approx(pages_ok)  # every page lands in some bucket
    assert (flow["pages_per_s"] * flow.attrs["bucket_s"]).sum() == pytest.approx(pages_ok)
    slow = slowest_frame(items, top=3)
    assert len(slow) == 3 and list(slow["seconds"]) == sorted(slow["seconds"], reverse=True)
    lost = plan.items[0].item_id
    frame = failures_frame(plan, items[items["item_id"] != lost])
    assert "no record: the item never finished" in set(frame["error"])
    retried = ManifestRecord(**{**vars(next(r for r in records if r.status == "ok")), "finished": 1e12})
    retried.status, retried.error = "failed", "worker crashed"
    frame = failures_frame(plan, records_frame([*records, retried]))
    assert frame.loc[frame["pdf"] == retried.pdf, "attempts"].item() == 2
    activity = activity_frame(items, [t.index for t in plan.tasks], buckets=7)
    assert activity["pages"].sum() == pytest.approx(pages_ok)  # spread per task, nothing lost
    assert activity["ok"].sum() + activity["degraded"].sum() == sum(r.status == "ok" for r in records)
    assert activity["failed"].sum() == sum(r.status != "ok" for r in records)
    assert set(activity["task"]) == {t.index for t in plan.tasks} and len(activity) <= 2 * 8
    places = places_frame(items.assign(host=items["task"].map({0: "<b>a", 1: "b"}), gpu="0"), [0, 1, 2])
    moved = places_frame(pd.concat([items.head(1).assign(host="c", gpu="1"), items]), [0, 1])
    assert task_labels(places) == {0: "task 0 / &lt;b&gt;a / GPU 0", 1: "task 1 / b / GPU 0", 2: "task 2 / no item"}
    assert task_labels(moved)[items["task"].iloc[0]].endswith("/ 2 GPUs on 2 host(s)")  # a task that moved


def test_aggregated_timeline_and_cut_tables(run):
    """The large-run layout, forced on the small run: a heatmap per task and bucket, tables cut."""
    text = run["cut_report"].read_text(encoding="utf-8")
    page = check_page(text)
    assert set(SECTIONS) | set(PLOTS) <= page.ids
    assert [trace["type"] for trace in plot_data(text, "timeline-plot")] == ["heatmap", "scatter"]
    failed = sum(r.status != "ok" for r in run["records"])
    assert len(page.cells["failures-table"]) == 3 * 7 and f"Failures ({failed})" in text
    assert f"… and {failed - 3} more not shown here: manifest.csv has every attempt" in text
    assert "attempts, too many to draw one by one" in text and "every attempt is in manifest.csv" in text
    assert IMG not in text and "<svg onload" not in text


@pytest.mark.browser
@pytest.mark.slow
def test_report_renders_in_a_real_browser(run, tmp_path, chromium):
    shot = tmp_path / "report.png"  # the LLM report drawn by the browser that checks it; look at it: pytest
    # --basetemp=DIR keeps it
    for report, plots, hover, shown, screenshot in (
        (run["report"], (*PLOTS, "gpu-plot"), HOVER_IMG, (f"{IMG}.pdf", "not a readable PDF"), None),
        (run["llm_report"], (*PLOTS, "llm-plot"), HOVER_MARKUP, (MARKUP,), shot),
    ):
        page = rendered(chromium, report, tmp_path, plots, hover, screenshot)
        assert "hm" not in page.classes  # no heatmap: a bar per record
        assert page.points.get("timeline-plot", 0) >= len(run["records"])  # a bar per record
        for text in shown:  # the name in the hover box, as text (not read as tags or entities)
            assert text in page.hover, (text, page.hover)
    page = rendered(chromium, run["cut_report"], tmp_path, PLOTS, HOVER_FAILED)  # per task and bucket
    assert "hm" in page.classes and page.points.get("timeline-plot", 0) >= 1  # the heatmap drawn, a failure mark
    assert re.search(r"task \d+ / .*\n.*: \d+ failed", page.hover), page.hover
    # the checks can fail: an error thrown by the page is seen
    _, probe, stderr = browse(
        chromium,
        run["report"],
        tmp_path,
        "--dump-dom",
        inject="<script>setTimeout(() => { throw new Error('self-test'); }, 0)</script>",
    )
    assert any("self-test" in e for e in probe["errors"]) and uncaught(stderr)
    assert shot.stat().st_size > 50_000  # something was drawn


def test_report_of_a_run_not_collected_yet(run, tmp_path):
    root = tmp_path / "early"
    shutil.copytree(run["paths"].root, root)
    (root / "summary.json").unlink()
    text = write_report(root).read_text(encoding="utf-8")
    assert "not collected yet" in text and set(SECTIONS) <= Page(text).ids
    text = write_report(root, CUT).read_text(encoding="utf-8")  # no manifest.csv yet: the page says where
    assert "every attempt is in the task manifests (manifests/task-*.jsonl)" in text and "manifest.csv" not in text
    assert "more not shown here: the task manifests (manifests/task-*.jsonl) have every attempt" in text
    for manifest in (root / "manifests").glob("task-*.jsonl"):
        manifest.unlink()
    page = Page(write_report(root).read_text(encoding="utf-8"))
    assert {"summary", "timeline", "failures", "slowest"} <= page.ids and "timeline-plot" not in page.ids
    assert len(page.cells["failures-table"]) == 7 * len(load_plan(root / "plan").items)  # 7 columns; all never finished
