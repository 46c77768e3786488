"""`--force-ocr auto` (issue 23, item 2): the scan's text-layer sample routes each PDF to OCR or not, the sample is
cached with the page count, the plan weighs the OCR pages, and the option keeps its flag form."""

from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner
from inputs import CORPUS, scanned_pdf
from test_scan_cache import reads  # noqa: F401 (a fixture: the PDFs whose pages the scan counts)

from hpc_marker.cli import cli
from hpc_marker.config.types import OCR
from hpc_marker.engines.base import EngineOptions
from hpc_marker.planning.plan import WorkItem, make_plan, split_items, work_items
from hpc_marker.planning.scan import scan_pdfs
from hpc_marker.planning.scancache import cache_file
from hpc_marker.planning.textcheck import OcrRouting, TextSample, sampled

ROUTING = OcrRouting(sample_pages=4, share=0.5, page_weight=3.0)
GARBLED = "zh/example-single.pdf"  # every page 8-27% U+FFFD (its formula glyphs have no Unicode mapping)


@pytest.fixture
def mixed_pdfs(sample_pdfs):
    """The shipped samples (one of them garbled) and a scan without a text layer."""
    (sample_pdfs / "scan.pdf").write_bytes(scanned_pdf(5))
    return sample_pdfs


def routed(folder, **scan_options) -> dict[str, bool]:
    scanned = scan_pdfs(folder, sample_pages=ROUTING.sample_pages, **scan_options)
    return {item.pdf: item.ocr for item in work_items(scanned, routing=ROUTING)}


def test_image_only_and_garbled_pdfs_go_to_ocr_clean_ones_do_not(mixed_pdfs):
    decided = routed(mixed_pdfs)
    assert {pdf for pdf, ocr in decided.items() if ocr} == {"scan.pdf", GARBLED}
    assert len(decided) == 7 and all(isinstance(ocr, bool) for ocr in decided.values())
    assert {item.ocr for item in work_items(scan_pdfs(mixed_pdfs))} == {None}  # without auto: no decision


@pytest.mark.corpus
def test_the_corpus_sends_only_its_broken_text_layers_to_ocr():
    decided = routed(CORPUS, workers=2)
    assert {pdf for pdf, ocr in decided.items() if ocr} == {"examples/example-single.pdf", "xtuthesis/xtu.pdf"}


def test_a_share_of_the_sampled_pages_decides():
    assert sampled(100, 4) == [12, 37, 62, 87] and sampled(3, 4) == [0, 1, 2]
    assert ROUTING.needs_ocr(TextSample(4, 2, 0)) and ROUTING.needs_ocr(TextSample(4, 1, 1))
    assert not ROUTING.needs_ocr(TextSample(4, 1, 0))  # a book's blank page is not a scan
    assert not ROUTING.needs_ocr(None) and not ROUTING.needs_ocr(TextSample(0, 0, 0))


def test_the_sample_is_cached_with_the_page_count_and_an_older_cache_still_reads(mixed_pdfs, reads):  # noqa: F811
    first = {s.relpath: s.pages for s in scan_pdfs(mixed_pdfs, cache=True)}  # no sample asked
    assert len(reads) == 7
    reads.clear()
    assert routed(mixed_pdfs, cache=True)["scan.pdf"] is True and len(reads) == 7  # no sample cached: read again
    uncached = routed(mixed_pdfs)
    reads.clear()
    assert routed(mixed_pdfs, cache=True) == uncached and reads == []  # now cached, sample and all
    assert {s.relpath: s.pages for s in scan_pdfs(mixed_pdfs, cache=True)} == first and reads == []

    path = cache_file(mixed_pdfs)  # a cache written before the sample was added: no `text` column
    data = json.loads(gzip.decompress(path.read_bytes()))
    assert set(data) == {"counter", "error", "format", "mtime_ns", "pages", "relpath", "root", "size", "status", "text"}
    del data["text"]
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    assert {s.relpath: s.pages for s in scan_pdfs(mixed_pdfs, cache=True)} == first and reads == []  # still used
    assert routed(mixed_pdfs, cache=True)["scan.pdf"] is True and len(reads) == 7


def _items(ocr_pages: list[int], text_pages: list[int]) -> list[WorkItem]:
    pages = [(p, True) for p in ocr_pages] + [(p, False) for p in text_pages]
    return [WorkItem(f"{i:06d}", f"f{i}.pdf", 0, p, ocr=ocr) for i, (p, ocr) in enumerate(pages)]


def _loads(plan, weight: float) -> list[float]:
    return [task.weighted_pages(weight) for task in plan.tasks]


def test_ocr_pages_weigh_more_so_the_tasks_get_equal_work():
    items = _items([40, 40, 40], [30] * 12)  # 360 weighted pages to OCR, 360 from the text layer
    weighed = make_plan(items, 2, split_pages=0, page_weight=3.0)
    assert _loads(weighed, 3.0) == [360.0, 360.0] and weighed.imbalance() == 1.0
    assert sorted(task.pages for task in weighed.tasks) == [200, 280]  # not equal pages: equal work
    by_pages = make_plan(items, 2, split_pages=0)  # what the plan would be without the weight
    assert by_pages.imbalance() < 1.05 and max(_loads(by_pages, 3.0)) / 360 > 1.05  # equal pages, unequal work
    assert weighed.to_json()["ocr_page_weight"] == 3.0


def test_a_pdf_that_goes_to_ocr_is_split_at_fewer_pages():
    parts = split_items(_items([60], [60]), 30, page_weight=3.0)
    assert [(p.pdf, p.pages, p.ocr) for p in parts] == [("f0.pdf", 10, True)] * 6 + [("f1.pdf", 30, False)] * 2


def test_plan_json_shows_ocr_on_each_item_with_auto_only(mixed_pdfs):
    def plan(*extra: str) -> dict:
        result = CliRunner().invoke(cli, ["plan", "--pdfs", str(mixed_pdfs), "--format", "json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    auto = plan("--force-ocr", "auto")
    items = [item for task in auto["tasks"] for item in task["items"]]
    assert {item["pdf"]: item["ocr"] for item in items} == routed(mixed_pdfs)
    assert sum(task["ocr_pages"] for task in auto["tasks"]) == 5 + 3 and auto["ocr_page_weight"] == 3.0
    for plain in (plan(), plan("--force-ocr")):  # no flag, and the flag alone (every page): no routing
        assert all("ocr" not in item for task in plain["tasks"] for item in task["items"])


@pytest.mark.parametrize(
    ("args", "mode"),
    [([], None), (["--force-ocr"], "all"), (["--force-ocr", "auto"], "auto"), (["--force-ocr", "all"], "all")],
)
def test_force_ocr_is_still_a_flag_and_takes_auto(args, mode, tmp_path):
    submit = cli.commands["submit"]
    context = submit.make_context("submit", ["--pdfs", str(tmp_path), "--out", str(tmp_path), *args, "--gpus", "2"])
    assert context.params["force_ocr"] == mode and context.params["gpus"] == 2  # the flag alone takes no value
    fields = EngineOptions.ocr_fields(mode)
    assert fields == {"force_ocr": mode == "all", "ocr_auto": mode == "auto"}


def test_force_ocr_refuses_another_value_in_one_line_and_reads_the_old_booleans(tmp_path):
    result = CliRunner().invoke(cli, ["submit", "--pdfs", str(tmp_path), "--out", str(tmp_path), "--force-ocr", "x"])
    assert result.exit_code == 2 and "--force-ocr" in result.output and "use auto or all" in result.output
    assert OCR.convert("true", None, None) == "all" and OCR.convert("0", None, None) == "none"  # a config's boolean
    retry = {p.name: p for p in cli.commands["retry"].params}["force_ocr"]
    assert retry.is_flag and retry.secondary_opts == ["--no-force-ocr"]  # retry RUN --force-ocr: every page


@pytest.mark.parametrize(("args", "asked"), [(["--force-ocr"], "--force-ocr"), (["--force-ocr", "auto"], "auto")])
def test_estimate_takes_the_flag_and_auto_and_asks_for_a_rate_made_the_same_way(sample_pdfs, args, asked):
    result = CliRunner().invoke(cli, ["estimate", "--pdfs", str(sample_pdfs), "--engine", "marker", *args])
    assert result.exit_code == 0, result.output
    key, command = result.output.split("its run records one: ")
    assert f"ocr={'auto' if asked == 'auto' else True}" in key
    assert command.strip().endswith("--force-ocr" if asked == "--force-ocr" else "--force-ocr auto")


def test_an_ocr_setting_out_of_bounds_is_one_line_naming_it(mixed_pdfs, tmp_path, monkeypatch):
    site = tmp_path / "site.toml"
    site.write_text("[ocr]\nshare = 2.0\n")
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(site))
    result = CliRunner().invoke(cli, ["plan", "--pdfs", str(mixed_pdfs), "--force-ocr", "auto"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "[ocr]" in result.output and "share = 2.0" in result.output
    assert CliRunner().invoke(cli, ["plan", "--pdfs", str(mixed_pdfs)]).exit_code == 0  # without auto: not read
