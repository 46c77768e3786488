"""A converted document's output flags, as the worker records them: the one call after conversion.

`output_fields(doc, pdf, pages, settings)` gives the manifest's `output_flags` for one work item (flags.py
judges; `settings` is the run record's `quality`, the thresholds fixed at submission; `thresholds` resolves
them from the config). The text layer it compares with is the PDF's own, read with pdfium (about 12 ms a
page), except where the output *is* the text layer (the text and benchmark engines without
LLM refinement: nothing to compare).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from hpc_marker.config import load_config
from hpc_marker.engines.base import ConvertedDocument
from hpc_marker.quality.flags import OutputCheck, Thresholds, check_output

logger = logging.getLogger(__name__)

LAYER_ENGINES = ("text", "benchmark")  # their output is the PDF's text layer (unless an LLM refined it)


def thresholds(given: dict[str, Any] | None = None) -> Thresholds:
    """The config's thresholds ([quality], and [submit] max_output_mb_per_page) with `given` over them: what
    a run's record keeps (`given`: the run's --max-output-mb-per-page; a record's own `quality`)."""
    config = load_config()
    values: dict[str, Any] = {
        **config.merged("quality"),
        "max_output_mb_per_page": config.merged("submit")["max_output_mb_per_page"],
    }
    values.update({key: value for key, value in (given or {}).items() if value is not None})
    return Thresholds.from_mapping(values)


@lru_cache(maxsize=8)
def _run_thresholds(settings: tuple[tuple[str, Any], ...]) -> Thresholds:
    """A worker's thresholds, read once per run record (not once per item)."""
    return thresholds(dict(settings))


def pdf_text_layer(pdf: Path, pages: range) -> dict[int, str] | None:
    """Each page's text-layer text (pdfium's), by 0-based index; None where the PDF cannot be read."""
    try:
        import pypdfium2 as pdfium

        document = pdfium.PdfDocument(str(pdf))
    except Exception as exc:  # pdfium raises several kinds; no layer is no comparison, not a failure
        logger.debug("no text layer of %s: %s", pdf, exc)
        return None
    try:
        texts = {}
        for index in pages:
            page = document[index]
            textpage = page.get_textpage()
            texts[index] = textpage.get_text_range()
            textpage.close()
            page.close()
        return texts
    except Exception as exc:
        logger.debug("no text layer of %s: %s", pdf, exc)
        return None
    finally:
        document.close()


def check_document(
    doc: ConvertedDocument, pdf: Path, pages: range, settings: dict[str, Any] | None, paginate: bool = True
) -> OutputCheck:
    """The output flags of `doc`, the conversion of `pages` of `pdf`."""
    is_layer = doc.metadata.get("engine") in LAYER_ENGINES and not doc.metadata.get("llm")
    layer = None if is_layer else pdf_text_layer(pdf, pages)
    return check_output(
        doc.text, doc.format, paginate, len(pages), layer, _run_thresholds(tuple(sorted((settings or {}).items())))
    )


def output_fields(
    doc: ConvertedDocument, pdf: Path, pages: range, settings: dict[str, Any] | None, paginate: bool = True
) -> dict[str, str]:
    """The manifest's `output_flags` for one converted item ("" when nothing was raised)."""
    return {"output_flags": check_document(doc, pdf, pages, settings, paginate).field()}
