"""The `text` engine: the PDF's own text layer through pdftext; no models, no GPU.

Output is paginated exactly the way marker paginates Markdown, so documents from either
engine have the same shape and a page range converted alone is a slice of the whole. It writes
`markdown` or `json` (marker's JSON shape, one Page block per page with the page's box), not
`html` or `chunks` (those need marker's layout). Every page's text layer is checked
(textlayer.py) before anything else touches it.
With the run's LLM service (`--llm`), each page's text is refined into clean Markdown by the
LLM (Ollama's chat API, or the OpenAI chat API for vLLM), as many pages at once as the run's
budget gives each worker; a page whose refinement fails keeps its extracted text and the document says so.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

from hpc_marker.engines.base import ConvertedDocument, EngineError, EngineOptions, EngineUnavailable, page_marker
from hpc_marker.engines.formats import check_output_format, json_document, page_block
from hpc_marker.engines.llmtiming import LlmClock
from hpc_marker.engines.textlayer import check_pages
from hpc_marker.util.text import one_line

FORMATS = ("markdown", "json")


class TextEngine:
    name = "text"
    startup_seconds = 30.0  # pdftext loads nothing big

    @classmethod
    def check(cls, options: EngineOptions) -> None:
        # installed, not imported: every task runs this check, and pdftext's import (pydantic settings) costs 0.35 CPU
        # s; the workers import it
        if importlib.util.find_spec("pdftext") is None:  # pragma: no cover - a base dependency
            raise EngineUnavailable("engine 'text' needs pdftext (not installed)")
        if options.force_ocr:  # (--force-ocr auto is accepted: the items carry their decision, for the plan's sake)
            raise EngineUnavailable("engine 'text' reads the text layer only; --force-ocr needs --engine marker")
        if options.extra_config:
            raise EngineUnavailable("engine 'text' takes no extra settings; --marker-config needs --engine marker")
        check_output_format(options.output_format)
        if options.output_format not in FORMATS:
            raise EngineUnavailable(
                f"engine 'text' writes markdown or json; --output-format "
                f"{options.output_format} needs marker's layout (--engine marker)"
            )

    def __init__(self, options: EngineOptions) -> None:
        self.check(options)
        self.options = options
        # built by a worker's initializer: pdftext's import (0.25 CPU s) is paid here, within the startup allowance,
        # not by the worker's first item under its --item-timeout (nor by the first item after every timeout)
        importlib.import_module("pdftext.extraction")

    def convert(self, pdf: Path, pages: range | None, ocr: bool | None = None) -> ConvertedDocument:
        """The text layer of `pages`; `ocr` (--force-ocr auto's decision) is carried, not acted on: this engine
        has no OCR (the worker records it in the document's metadata)."""
        from pdftext.extraction import paginated_plain_text_output
        from pdftext.schema import PdfPasswordError

        page_ids = list(pages) if pages is not None else None
        try:
            texts = paginated_plain_text_output(str(pdf), sort=True, hyphens=False, page_range=page_ids)
        except PdfPasswordError:
            raise EngineError("encrypted: a password is required to open it") from None
        except MemoryError:  # the worker reports it and is replaced (workpool.py)
            raise
        except Exception as exc:  # pdfium raises many kinds; each becomes one manifest line
            raise EngineError(one_line(exc, with_type=True, empty="no detail")) from None
        if page_ids is None:
            page_ids = list(range(len(texts)))
        text_layer = check_pages(zip(page_ids, texts, strict=False))
        llm_meta = None
        if self.options.llm:
            texts, llm_meta = self._refine(texts)
        metadata = {
            "engine": self.name,
            "page_stats": [{"page_id": i, "text_chars": len(t)} for i, t in zip(page_ids, texts, strict=False)],
            "text_layer": text_layer,
        }
        if llm_meta is not None:
            metadata["llm"] = llm_meta
        fmt = self.options.output_format
        return ConvertedDocument(text=self._render(pdf, page_ids, texts), format=fmt, metadata=metadata)

    def _render(self, pdf: Path, page_ids: list[int], texts: list[str]) -> str:
        if self.options.output_format == "json":
            boxes = _page_boxes(pdf, page_ids)
            return json_document(
                [page_block(i, _paragraphs(text), box) for i, text, box in zip(page_ids, texts, boxes, strict=False)]
            )
        if self.options.paginate:
            return "".join(page_marker(i) + text for i, text in zip(page_ids, texts, strict=False))
        return "\n\n".join(texts)

    def _refine(self, texts: list[str]) -> tuple[list[str], dict]:
        from hpc_marker.llm.refine import refine_pages

        llm = self.options.llm
        assert llm is not None  # convert refines only with the run's LLM service
        clock = LlmClock()
        with clock.timed():  # the refinement is its LLM calls: their union is the whole of it
            refined = refine_pages(
                texts,
                llm.endpoint,
                model=llm.endpoint.model,
                task=llm.task,
                concurrency=4 if llm.max_concurrency is None else llm.max_concurrency,
                timeout_s=300.0 if llm.timeout_s is None else llm.timeout_s,
            )
        degraded = [r.reason for r in refined if r.degraded]
        meta = {
            "refined_pages": len(refined) - len(degraded),
            "degraded_pages": len(degraded),
            "tokens_in": sum(r.tokens_in for r in refined),
            "tokens_out": sum(r.tokens_out for r in refined),
            "seconds": round(clock.take(), 3),  # LLM wait: the worker moves it to the commit log
        }
        if degraded:
            meta["degraded"] = f"{len(degraded)} of {len(refined)} pages kept their extracted text ({degraded[0]})"
        return [r.text for r in refined], meta


def _paragraphs(text: str) -> str:
    """A page's text as HTML paragraphs (blank lines separate them), escaped."""
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _page_boxes(pdf: Path, page_ids: list[int]) -> list[list[float]]:
    """Each page's box [0, 0, width, height] in PDF points, as marker's Page blocks give it."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        return [[0.0, 0.0, *map(float, document[i].get_size())] for i in page_ids]
    finally:
        document.close()
