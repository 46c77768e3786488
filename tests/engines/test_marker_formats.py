"""Output formats at marker-pdf's real boundary (marker 1.10.x and 2.0.x), without model weights.

For each `--output-format`, marker's own ConfigParser picks marker's renderer, that renderer's
output of a page-ranged document goes through `document_from_rendered` (marker's own
`text_from_rendered`), and the parts of a split document merge into what the whole document
renders to. Our JSON pages and lost-page placeholders validate as marker's own pydantic models.
"""

from __future__ import annotations

import json

import pytest
from test_marker_engine import build_text_document, make_pdf

from hpc_marker.engines import marker as engine_mod
from hpc_marker.engines.base import EngineOptions
from hpc_marker.engines.formats import (
    OUTPUT_FORMATS,
    json_document,
    lost_page,
    page_block,
    page_texts,
)
from hpc_marker.runstate.output import merge_documents

pytestmark = pytest.mark.marker
RENDERERS = {
    "markdown": "marker.renderers.markdown.MarkdownRenderer",
    "json": "marker.renderers.json.JSONRenderer",
    "html": "marker.renderers.html.HTMLRenderer",
    "chunks": "marker.renderers.chunk.ChunkRenderer",
}


@pytest.fixture
def marker_pkg():
    return pytest.importorskip("marker")


def render(pdf, options: EngineOptions, pages: range):
    """What MarkerEngine.convert does, with the text layer in place of the models."""
    from marker.config.parser import ConfigParser
    from marker.util import strings_to_classes

    config = engine_mod.build_marker_config(options, pages)
    renderer = strings_to_classes([ConfigParser(engine_mod.cli_options(options, pages)).get_renderer()])[0]
    return engine_mod.document_from_rendered(renderer(config)(build_text_document(str(pdf), config)), options)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_markers_config_parser_picks_its_renderer_for_each_format(marker_pkg, fmt):
    from marker.config.parser import ConfigParser

    options = EngineOptions(output_format=fmt)
    assert ConfigParser(engine_mod.cli_options(options)).get_renderer() == RENDERERS[fmt]
    assert engine_mod.build_marker_config(options)["output_format"] == fmt


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_split_parts_merge_like_the_whole_document(marker_pkg, tmp_path, fmt):
    pdf = make_pdf(tmp_path / "doc.pdf", pages=4)
    options = EngineOptions(output_format=fmt, paginate=True)
    whole = render(pdf, options, range(4))
    parts = [render(pdf, options, range(2)), render(pdf, options, range(2, 4))]
    merged = merge_documents(parts, paginate=True)
    assert merged.format == fmt and all(isinstance(p.text, str) for p in parts)
    assert page_texts(fmt, merged.text, True) == page_texts(fmt, whole.text, True)
    assert [p for p, _ in page_texts(fmt, parts[1].text, True)] == [2, 3]  # marker keeps the PDF's page index
    assert [e["page"] for e in merged.metadata["text_layer"]] == [0, 1, 2, 3]
    assert not any(e["empty"] or e["garbled"] for e in merged.metadata["text_layer"])
    if fmt == "markdown":
        assert merged.text == whole.text
    elif fmt == "html":
        assert merged.text.count("<body>") == 1 and merged.text.count("</body>") == 1
    else:
        key = "children" if fmt == "json" else "blocks"
        ours, theirs = json.loads(merged.text), json.loads(whole.text)
        assert [b["id"] for b in ours[key]] == [b["id"] for b in theirs[key]]
        assert len({b["id"] for b in ours[key]}) == len(ours[key])
        if fmt == "chunks":
            assert ours["page_info"].keys() == theirs["page_info"].keys()


def test_json_and_chunks_validate_as_markers_models(marker_pkg):
    """The text engine's JSON pages (formats.page_block) and our lost-page placeholders are marker's
    own JSON and chunk shapes."""
    from marker.renderers.chunk import FlatBlockOutput
    from marker.renderers.json import JSONBlockOutput

    text_json = json_document([page_block(0, "<p>a</p>", [0, 0, 612.0, 792.0]), page_block(1, "<p>b</p>")])
    pages = [JSONBlockOutput.model_validate(p) for p in json.loads(text_json)["children"]]
    assert [p.id for p in pages] == ["/page/0/Page/0", "/page/1/Page/0"] and pages[0].polygon[2] == [612.0, 792.0]
    for page in json.loads(lost_page("json", 5, "timeout", True))["children"]:
        JSONBlockOutput.model_validate(page)
    for block in json.loads(lost_page("chunks", 5, "timeout", True))["blocks"]:
        assert FlatBlockOutput.model_validate(block).page == 5


def test_no_images_is_markers_disable_image_extraction(marker_pkg):
    from marker.renderers.html import HTMLRenderer
    from marker.renderers.markdown import MarkdownRenderer

    for images in (True, False):
        config = engine_mod.build_marker_config(EngineOptions(images=images, output_format="html"))
        assert config.get("extract_images", True) is images
        assert HTMLRenderer(config).extract_images is images and MarkdownRenderer(config).extract_images is images
