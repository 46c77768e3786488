"""Output flags (issue 23, items 1 and 4): crafted outputs raise each flag, on the pages concerned; natural text,
a running header and a listing repeated in the PDF itself raise none; the ceiling flags a document but keeps it."""

from __future__ import annotations

import json

import pytest
from inputs import EXAMPLES

from hpc_marker.engines.base import ConvertedDocument, page_marker
from hpc_marker.engines.formats import json_document, page_block
from hpc_marker.quality.document import check_document, output_fields, thresholds
from hpc_marker.quality.flags import check_output, commit_tokens, merge_fields, parse_field, table_shape

LIMITS = thresholds()
SENTENCE = "The committee approved the budget for the next fiscal year without any further debate. "
PROSE = (
    "Marker converts documents to Markdown, JSON and HTML quickly and accurately. It formats tables, forms, "
    "equations, inline math, links, references and code blocks; it extracts and saves images, removes headers "
    "and footers and other artifacts, and it is extensible with your own formatting and logic. "
)


def natural_page(i: int) -> str:
    """A page of varied prose (no n-gram repeats three times), with a running header."""
    words = [f"{w}{(i * 997 + k * 31) % 1009}" for k, w in enumerate(PROSE.split())]
    return f"Annual report 2024, chapter {i}\n\n" + " ".join(words * 1) + "\n\n" + PROSE


def paginated(pages: list[str], first: int = 0) -> str:
    return "".join(page_marker(i) + text for i, text in enumerate(pages, first))


def flags_of(text: str, pages: int, layer=None, output_format="markdown", paginate=True, limits=LIMITS) -> str:
    return check_output(text, output_format, paginate, pages, layer, limits).field()


def test_natural_pages_and_a_running_header_raise_nothing():
    pages = [natural_page(i) for i in range(30)]
    assert flags_of(paginated(pages), 30, {i: t for i, t in enumerate(pages)}) == ""
    assert flags_of("\n\n".join(pages), 30, None, paginate=False) == ""


def test_one_sentence_repeated_is_repetition_on_its_page():
    pages = [natural_page(0), SENTENCE * 80, natural_page(2)]
    layer = {0: pages[0], 1: natural_page(1), 2: pages[2]}
    assert flags_of(paginated(pages), 3, layer) == "repetition:2"
    assert flags_of(paginated(pages), 3, None) == "repetition:2"  # no layer known: judged on its own


def test_a_short_line_or_a_phrase_in_a_loop_is_repetition():
    assert flags_of(paginated(["Figure 3\n" * 400]), 1) == "repetition:1"
    assert flags_of(paginated(["的" * 2000]), 1) == "repetition:1"  # a CJK character is a word
    assert flags_of("\n\n".join(["intro text"] + ["and so on and so on"] * 200), 1, paginate=False) == "repetition"


def test_repetition_the_text_layer_has_itself_is_no_loop():
    listing = "Text Text Text Text Text Text Text Text Text Text\n" * 60
    assert flags_of(paginated([listing]), 1, {0: listing}) == ""


def test_a_300_column_table_is_wide_in_markdown_html_and_json():
    header = "|" + "|".join(f"c{i}" for i in range(300)) + "|\n|" + "---|" * 300 + "\n"
    assert flags_of(paginated([natural_page(0), header + "|" + "x|" * 300 + "\n"]), 2) == "wide-table:2"
    cells = "<table><tr>" + "<td>1</td>" * 300 + "</tr></table>"
    assert flags_of(f"<html><body>{cells}</body></html>", 1, output_format="html", paginate=False) == "wide-table"
    doc = json_document([page_block(0, cells)])
    assert flags_of(doc, 1, output_format="json") == "wide-table:1"


def test_a_table_of_ordinary_width_but_too_many_cells_is_wide():
    row = "|" + "|".join(["7"] * 40) + "|\n"
    assert table_shape(row * 10) == (40, 400)
    assert flags_of(paginated([row * 200]), 1) == "wide-table:1"  # 8000 cells on one page
    assert flags_of(paginated([row * 20]), 1) == ""


def test_cjk_in_the_layer_and_none_in_the_output_is_lost_script():
    chinese = "中文文档的文本层包含大量汉字\uff0c例如这一段说明文字\uff0c它描述了转换的结果和页面的内容\u3002" * 3
    layer = {0: natural_page(0), 1: chinese}
    assert flags_of(paginated([natural_page(0), "The page in English words only, nothing else."]), 2, layer) == (
        "lost-script:2"
    )
    assert flags_of(paginated([natural_page(0), chinese]), 2, layer) == ""
    greek_math = natural_page(0) + " \u03b1 \u03b2 \u03b3 \u03b4" * 3  # a few symbols are no script of the page
    assert flags_of(paginated([natural_page(0)]), 1, {0: greek_math}) == ""


def test_an_empty_output_page_with_text_in_its_layer_is_empty_output():
    layer = {0: natural_page(0), 1: natural_page(1), 2: "   "}
    assert flags_of(paginated([natural_page(0), "", ""]), 3, layer) == "empty-output:2"
    assert flags_of("", 3, layer, paginate=False) == "empty-output"


def test_output_far_larger_than_its_layer_or_past_the_ceiling_is_oversize():
    big = " ".join(f"w{i}" for i in range(40_000))  # 250 KB on one page (no loop), its layer 1 KB
    assert flags_of(paginated([natural_page(0), big]), 2, {0: natural_page(0), 1: natural_page(1)}) == ("oversize:2")
    page = natural_page(0)
    low = thresholds({"max_output_mb_per_page": 0.0002})  # 210 bytes a page
    assert flags_of(paginated([page]), 1, {0: page}) == ""
    assert flags_of(paginated([page]), 1, {0: page}, limits=low) == "oversize:1"
    assert flags_of(page, 1, {0: page}, paginate=False, limits=low) == "oversize"


def test_an_output_past_the_ceiling_is_kept_and_flagged(tmp_path):
    from hpc_marker.runstate.output import stage_document

    pdf = EXAMPLES / "en" / "ltnews07.pdf"
    doc = ConvertedDocument(text=paginated([natural_page(0)]), metadata={"engine": "marker"})
    fields = output_fields(doc, pdf, range(1), {"max_output_mb_per_page": 0.0002})
    staged = stage_document(tmp_path, "item", "ltnews07", doc)
    assert fields == {"output_flags": "oversize:1"}
    assert (staged / "ltnews07.md").read_text() == doc.text  # kept whole


def test_the_text_layer_is_the_pdfs_own(tmp_path):
    """A marker output in English of a Chinese PDF: its pdfium text layer has the CJK the output lost."""
    pdf = EXAMPLES / "zh" / "example-single.pdf"  # about 400 CJK characters a page
    english = ConvertedDocument(text=paginated([natural_page(1), natural_page(2)], 1), metadata={"engine": "marker"})
    check = check_document(english, pdf, range(1, 3), None)
    assert check.field() == "lost-script:2-3"
    same = ConvertedDocument(text=english.text, metadata={"engine": "text"})
    assert check_document(same, pdf, range(1, 3), None).names == ()  # the text engine's output is its layer
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"not a pdf")
    assert check_document(english, broken, range(1, 3), None).names == ()  # no layer: nothing to compare


def test_the_manifest_value_reads_back_merges_and_has_commit_letters():
    field = "repetition:3,5-7 wide-table"
    assert [(f.name, f.pages) for f in parse_field(field)] == [("repetition", (2, 4, 5, 6)), ("wide-table", ())]
    assert merge_fields(["repetition:3", None, "lost-script repetition:9-10", ""]) == "repetition:3,9-10 lost-script"
    assert merge_fields([None, None]) is None
    assert commit_tokens(field) == "RW" and commit_tokens("") == ""


@pytest.mark.parametrize("bad", [{"max_output_mb_per_page": "lots"}])
def test_thresholds_refuse_what_is_no_number(bad):
    with pytest.raises(ValueError):
        thresholds(bad)


def test_images_embedded_in_json_count_for_no_size():
    block = page_block(0, f"<p>{natural_page(0)}</p>", [0, 0, 612, 792], images={"fig.jpeg": "A" * 3_000_000})
    assert flags_of(json_document([block]), 1, output_format="json") == ""  # 3 MB of image, 1 KB of text


def test_json_pages_are_judged_on_their_text_not_their_markup():
    blocks = [page_block(i, f"<p>{natural_page(i)}</p>", [0, 0, 612, 792]) for i in range(3)]
    text = json_document(blocks)
    assert json.loads(text)["children"] and flags_of(text, 3, output_format="json") == ""
