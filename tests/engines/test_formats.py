"""Output formats (merging parts, lost-page placeholders, page texts) and the text-layer flags. No marker needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import EXAMPLES

from hpc_marker.engines import check_engine, create_engine
from hpc_marker.engines.base import (
    ConvertedDocument,
    EngineOptions,
    EngineUnavailable,
    page_marker,
)
from hpc_marker.engines.formats import (
    LOST_CLASS,
    OUTPUT_FORMATS,
    file_name,
    lost_page,
    lost_page_document,
    lost_page_text,
    merge,
    page_texts,
)
from hpc_marker.engines.textlayer import (
    EMPTY_BELOW,
    GARBLED_SHARE,
    check_page,
    check_pages,
    flagged_pages,
)
from hpc_marker.runstate.output import (
    merge_documents,
    merge_parts,
    read_document,
    stage_document,
)

GARBLED_PDF = EXAMPLES / "zh" / "example-single.pdf"
LONG_PDF = EXAMPLES / "en" / "ltxtable.pdf"  # 3 pages


def test_file_names_follow_markers_save_output():
    assert [file_name("a", f) for f in OUTPUT_FORMATS] == ["a.md", "a.json", "a.html", "a.json"]


# --- the text engine ------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "paginate"), [("markdown", True), ("markdown", False), ("json", True)])
def test_text_engine_split_then_merged_equals_whole(fmt, paginate):
    engine = create_engine("text", EngineOptions(output_format=fmt, paginate=paginate))
    whole = engine.convert(LONG_PDF, range(3))
    parts = [engine.convert(LONG_PDF, range(1)), engine.convert(LONG_PDF, range(1, 3))]
    merged = merge_documents(parts, paginate)
    assert merged.text == whole.text and merged.format == fmt
    assert merged.metadata["text_layer"] == whole.metadata["text_layer"]


def test_text_engine_json_has_one_page_block_per_page():
    doc = create_engine("text", EngineOptions(output_format="json")).convert(LONG_PDF, range(1, 3))
    pages = json.loads(doc.text)["children"]
    assert [p["id"] for p in pages] == ["/page/1/Page/0", "/page/2/Page/0"]
    assert all(p["block_type"] == "Page" and len(p["bbox"]) == 4 and p["bbox"][2] > 0 for p in pages)
    assert [page for page, _ in page_texts("json", doc.text, True)] == [1, 2]


@pytest.mark.parametrize("fmt", ["html", "chunks", "pdf"])
def test_text_engine_refuses_formats_it_cannot_write(fmt):
    with pytest.raises(EngineUnavailable) as info:
        check_engine("text", EngineOptions(output_format=fmt))
    assert "\n" not in str(info.value) and fmt in str(info.value)


def test_example_single_is_flagged_garbled_by_the_text_engine():
    doc = create_engine("text", EngineOptions()).convert(GARBLED_PDF, None)
    assert flagged_pages(doc.metadata["text_layer"]) == {"empty_pages": [], "garbled_pages": [0, 1, 2]}
    sound = create_engine("text", EngineOptions()).convert(LONG_PDF, None)
    assert flagged_pages(sound.metadata["text_layer"]) == {"empty_pages": [], "garbled_pages": []}


# --- text-layer thresholds --------------------------------------------------------------


def test_empty_and_garbled_thresholds():
    assert check_page(0, " \n\t" + "x" * (EMPTY_BELOW - 1))["empty"]
    assert not check_page(0, "x" * EMPTY_BELOW)["empty"]
    assert not check_page(0, "\ufffd" * 5)["garbled"]  # empty, so not also garbled
    n = 100
    bad = round(n * GARBLED_SHARE)
    for char in ("\ufffd", "\ue000", "\U000f0001", "\x01", "\x9f"):
        assert check_page(0, char * bad + "a" * (n - bad))["garbled"], repr(char)
        assert not check_page(0, char * (bad - 1) + "a" * (n - bad + 1))["garbled"], repr(char)
    assert not check_page(0, "\t\n\r\x0b\x0c\x85\xa0 " * 50 + "a" * 20)["garbled"]  # whitespace is not bad
    assert check_pages([(3, ""), (4, "ok " * 10)]) == [
        {"page": 3, "chars": 0, "bad_chars": 0, "empty": True, "garbled": False},
        {"page": 4, "chars": 20, "bad_chars": 0, "empty": False, "garbled": False},
    ]
    assert flagged_pages(None) == {"empty_pages": None, "garbled_pages": None}


# --- merging and lost pages, every format ---------------------------------------------------


def _parts(fmt: str) -> list[str]:
    """Three pages (0, 1, 3) in `fmt`, as marker writes them, and page 2 lost."""
    if fmt == "markdown":
        pages = [page_marker(0) + "zero", page_marker(1) + "one", page_marker(3) + "three"]
        return [pages[0] + pages[1], lost_page(fmt, 2, "timeout", True), pages[2]]
    if fmt == "html":

        def page(i: int, text: str) -> str:
            return f"<div class='page' data-page-id='{i}'><p>{text}</p></div>"

        head, tail = "<!DOCTYPE html>\n<html><head><meta charset='utf-8'/></head><body>", "</body></html>\n"
        return [
            head + page(0, "zero") + page(1, "one") + tail,
            lost_page(fmt, 2, "timeout", True),
            head + page(3, "three") + tail,
        ]
    if fmt == "json":

        def page(i: int, text: str) -> dict:
            leaf = {
                "id": f"/page/{i}/Text/1",
                "block_type": "Text",
                "html": f"<p>{text}</p>",
                "polygon": [],
                "bbox": [],
                "children": None,
            }
            return {
                "id": f"/page/{i}/Page/0",
                "block_type": "Page",
                "html": "<content-ref src='x'>",
                "polygon": [],
                "bbox": [],
                "children": [leaf],
            }

        def doc(*pages):
            return json.dumps({"children": list(pages), "block_type": "Document"}, indent=2)

        return [doc(page(0, "zero"), page(1, "one")), lost_page(fmt, 2, "timeout", True), doc(page(3, "three"))]

    def block(i: int, text: str) -> dict:
        return {"id": f"/page/{i}/Text/1", "block_type": "Text", "html": f"<p>{text}</p>", "page": 0}

    def doc(pages):
        return json.dumps(
            {"blocks": [block(i, t) for i, t in pages], "page_info": {str(i): {"bbox": [0, 0, 1, 1]} for i, _ in pages}}
        )

    return [doc([(0, "zero"), (1, "one")]), lost_page(fmt, 2, "timeout", True), doc([(3, "three")])]


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_parts_and_a_lost_page_merge_into_one_document(fmt):
    merged = merge(fmt, _parts(fmt), paginate=True)
    pages = page_texts(fmt, merged, paginate=True)
    assert [page for page, _ in pages] == [0, 1, 2, 3]
    texts = dict(pages)
    assert "zero" in texts[0] and "one" in texts[1] and "three" in texts[3]
    assert lost_page_text(2, "timeout") in texts[2] and "page 3 could not be converted: timeout" in texts[2]
    if fmt != "markdown":
        assert LOST_CLASS in merged
    if fmt == "html":
        assert merged.count("<body>") == 1 and merged.count("</body>") == 1 and merged.startswith("<!DOCTYPE html>")
    if fmt in ("json", "chunks"):
        data = json.loads(merged)
        ids = [b["id"] for b in data["children" if fmt == "json" else "blocks"]]
        assert len(ids) == len(set(ids)) == 4
        if fmt == "chunks":
            assert list(data["page_info"]) == ["0", "1", "2", "3"] and "hpcmarker_lost" in data["page_info"]["2"]


@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_unpaginated_formats_keep_no_page_texts_but_show_the_lost_page(fmt):
    assert page_texts(fmt, "anything", paginate=False) is None
    shown = lost_page(fmt, 6, "worker died", paginate=False)
    assert "page 7 could not be converted: worker died" in shown


def test_merge_documents_unites_images_and_list_metadata_in_page_order():
    first = ConvertedDocument(
        text=page_marker(0) + "a",
        images={"_page_0_Picture_1.jpeg": b"0"},
        metadata={"page_stats": [{"page_id": 0}], "text_layer": [{"page": 0}], "engine": "marker"},
    )
    second = ConvertedDocument(
        text=page_marker(2) + "c",
        images={"_page_2_Picture_1.jpeg": b"2"},
        metadata={"page_stats": [{"page_id": 2}], "engine": "other"},
    )
    merged = merge_documents([first, lost_page_document("markdown", 1, "failed: boom", True), second], True)
    assert merged.images == {"_page_0_Picture_1.jpeg": b"0", "_page_2_Picture_1.jpeg": b"2"}
    assert merged.metadata["page_stats"] == [{"page_id": 0}, {"page_id": 2}]
    assert merged.metadata["lost_pages"] == [{"page": 1, "reason": "failed: boom"}]
    assert merged.metadata["engine"] == "marker"
    assert [p for p, _ in page_texts("markdown", merged.text, True)] == [0, 1, 2]


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_staged_parts_read_back_and_merge_in_their_format(tmp_path: Path, fmt):
    parts = _parts(fmt)
    folders = [
        stage_document(
            tmp_path, f"p{i}", "doc", ConvertedDocument(text=t, format=fmt, images={f"_page_{i}_x.png": b"i"})
        )
        for i, t in enumerate(parts)
    ]
    assert sorted(p.name for p in folders[0].iterdir()) == ["_page_0_x.png", file_name("doc", fmt), "doc_meta.json"]
    assert read_document(folders[1], "doc", fmt).text == parts[1]
    merged = merge_parts(folders, "doc", fmt, paginate=True)
    assert merged.text == merge(fmt, parts, paginate=True)
    assert set(merged.images) == {"_page_0_x.png", "_page_1_x.png", "_page_2_x.png"}
