"""`--force-ocr auto`: whether a PDF needs OCR, from a few of its pages' text layer, read at scan time.

The scan (scan.py) reads up to `sample_pages` pages spread over the PDF (`sampled`: the middle of each of that
many equal stretches, every page of a shorter PDF), each one's characters as pdfium maps them (what pdftext, and
so marker, reads: a glyph without a Unicode mapping is U+FFFD), and judges each page with the text-layer flags
(engines/textlayer.py: empty, garbled). A PDF whose share of sampled pages that are empty or garbled is at least
`share` gets OCR; any other does not. The sample's counts are cached with the page count (scancache.py), so
the check costs a PDF once (about 5 ms a page here), whatever the thresholds. Defaults: `[ocr]` in
config/defaults.toml. Pure apart from `read_sample` and `page_text`.

Measured on the test corpus and the examples (63 PDFs, 4 pages sampled): two go to OCR, the Chinese
example-single.pdf (every page 8-27% U+FFFD: its formula glyphs have no mapping) and xtuthesis/xtu.pdf (no text
layer); none of the others has a sampled page that is empty or garbled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from hpc_marker.engines.textlayer import check_page


class TextSample(NamedTuple):
    """What the scan found on a PDF's sampled pages: how many it read, and how many were empty or garbled."""

    sampled: int
    empty: int
    garbled: int


@dataclass(frozen=True)
class OcrRouting:
    """`--force-ocr auto`'s settings ([ocr] in the config: the defaults are there)."""

    sample_pages: int  # pages read per PDF
    share: float  # a PDF goes to OCR when at least this share of its sampled pages is empty or garbled
    page_weight: float  # the plan's cost of a page converted with OCR, against 1 for one without

    @classmethod
    def from_config(cls) -> OcrRouting:
        """The config's [ocr]; ConfigError (one line) for a value out of its bounds."""
        from hpc_marker.config import ConfigError, load_config

        values: dict[str, Any] = load_config().merged("ocr")
        try:
            routing = cls(int(values["sample_pages"]), float(values["share"]), float(values["page_weight"]))
        except (TypeError, ValueError):
            routing = None
        if routing is None or routing.sample_pages < 1 or not 0 < routing.share <= 1 or routing.page_weight <= 0:
            shown = ", ".join(f"{key} = {values[key]!r}" for key in ("sample_pages", "share", "page_weight"))
            raise ConfigError(
                f"[ocr] {shown}: sample_pages must be a whole number of at least 1, share from 0 (not included) "
                "to 1, page_weight more than 0"
            )
        return routing

    def needs_ocr(self, sample: TextSample | None) -> bool:
        """Whether a PDF with this sample gets OCR (no sample, an unreadable PDF: no)."""
        if not sample or not sample.sampled:
            return False
        return (sample.empty + sample.garbled) >= self.share * sample.sampled


def sampled(pages: int, count: int) -> list[int]:
    """The 0-based pages read of a PDF of `pages` pages: the middle of each of `count` equal stretches."""
    if pages <= count:
        return list(range(pages))
    return sorted({int((k + 0.5) * pages / count) for k in range(count)})


def page_text(page: Any) -> str:
    """A pdfium page's text, character by character as pdfium maps them (lone surrogates as U+FFFD, as pdftext)."""
    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()
    try:
        raw = textpage.raw
        codes = [pdfium_c.FPDFText_GetUnicode(raw, i) for i in range(pdfium_c.FPDFText_CountChars(raw))]
    finally:
        textpage.close()
    return "".join("\ufffd" if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF else chr(code) for code in codes)


def read_sample(path: str, count: int) -> TextSample | None:
    """The sample of the PDF at `path` (`count` pages at most); None when pdfium cannot read it."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError):
        return None
    checked = []
    try:
        for index in sampled(len(document), count):
            page = document[index]
            try:
                checked.append(check_page(index, page_text(page)))
            finally:
                page.close()
    except pdfium.PdfiumError:
        return None
    finally:
        document.close()
    return TextSample(len(checked), sum(c["empty"] for c in checked), sum(c["garbled"] for c in checked))
