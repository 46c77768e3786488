"""Output formats: what a document is in each of marker's renderers, and how its pieces join.

A document is a sequence of pages. Each format knows:
- its file (`file_name`: marker's own `save_output` names: `.md`, `.json`, `.html`; chunks are `.json`);
- how the parts of one PDF (page ranges converted apart, given in page order) join into one
  document (`merge`);
- the part that stands for a page that could not be converted (`lost_page`): a visible placeholder
  that merges like any other part, so a document can be assembled around a lost page in every format;
- the text of each page, where the format keeps page boundaries (`page_texts`), for the text-layer
  flags of an engine that only sees its own output (textlayer.py).

  markdown  pages marked by page_marker(i) when paginated; unpaginated parts are joined by a blank line
  json      {"children": [Page blocks], "block_type": "Document"}: parts' pages concatenated
  html      one <html> page: the first part's head, every part's <body> content in order; paginated,
            each page is a <div class="page" data-page-id=i>
  chunks    {"blocks": [...], "page_info": {i: {...}}}: blocks concatenated, page_info united

marker numbers pages with the PDF's own 0-based index even for a page range (block ids
`/page/<i>/...`, page markers `{i}`, `data-page-id`, `page_info` keys), so merged parts keep
consistent, distinct ids. Images are files beside Markdown and HTML (their names carry the page
index); JSON and chunks embed them in their blocks. Pure: strings in, strings out.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from hpc_marker.engines.base import ConvertedDocument, EngineUnavailable, page_marker

OUTPUT_FORMATS = ("markdown", "json", "html", "chunks")
EXTENSIONS = {"markdown": "md", "json": "json", "html": "html", "chunks": "json"}
LOST_CLASS = "hpcmarker-lost"  # the class of a lost page's placeholder in HTML, JSON and chunks

_PAGE_MARKER = re.compile(r"\n\n\{(\d+)\}-{48}\n\n")
_PAGE_ID = re.compile(r"^/page/(\d+)")
_BODY_OPEN = re.compile(r"<body[^>]*>", re.IGNORECASE)
_HTML_PAGE = re.compile(r"""<div class=["']page(?: [^"']*)?["'] data-page-id=["'](\d+)["']>""")
_TAG = re.compile(r"<[^>]+>")


def check_output_format(name: str) -> None:
    if name not in OUTPUT_FORMATS:
        raise EngineUnavailable(f"--output-format {name!r}: choose from {', '.join(OUTPUT_FORMATS)}")


def file_name(stem: str, output_format: str) -> str:
    """The document's file: `<stem>.md`, `.json` (json and chunks) or `.html`."""
    return f"{stem}.{EXTENSIONS[output_format]}"


def lost_page_text(page: int, reason: str) -> str:
    """What a reader sees where page `page` (0-based) is missing."""
    return f"[hpcmarker: page {page + 1} could not be converted: {reason}]"


def html_text(markup: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub(" ", markup))


def page_block(page: int, markup: str, bbox: list[float] | None = None, **extra: Any) -> dict:
    """A Page block in marker's JSON shape (id, block_type, html, polygon, bbox, children, ...)."""
    box = list(bbox or [])
    polygon = [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]] if len(box) == 4 else []
    return {
        "id": f"/page/{page}/Page/0",
        "block_type": "Page",
        "html": markup,
        "polygon": polygon,
        "bbox": box,
        "children": [],
        "section_hierarchy": {},
        "images": {},
        **extra,
    }


def json_document(pages: list[dict]) -> str:
    """A document in marker's JSON shape (what marker's text_from_rendered writes: no metadata)."""
    return json.dumps({"children": pages, "block_type": "Document"}, indent=2, ensure_ascii=False)


def _page_of(block_id: str) -> int | None:
    match = _PAGE_ID.match(block_id or "")
    return int(match.group(1)) if match else None


def _leaf_text(block: dict) -> str:
    children = block.get("children")
    if children:
        return "\n".join(_leaf_text(child) for child in children)
    return html_text(block.get("html") or "")


def _split_body(page: str) -> tuple[str, str, str]:
    """(head up to and with <body>, body content, tail from </body>); a fragment is all body."""
    opened = _BODY_OPEN.search(page)
    end = page.rfind("</body>")
    if not opened or end < opened.end():
        return "", page, ""
    return page[: opened.end()], page[opened.end() : end], page[end:]


def _html_page(content: str) -> str:
    head = '<!DOCTYPE html>\n<html>\n <head>\n  <meta charset="utf-8"/>\n </head>\n <body>\n'
    return f"{head}{content}\n </body>\n</html>\n"


def merge(output_format: str, parts: list[str], paginate: bool) -> str:
    """Parts of one document, in page order, as one document of the same format."""
    if output_format == "markdown":
        return "".join(parts) if paginate else "\n\n".join(parts)
    if output_format == "html":
        head, _, tail = _split_body(parts[0])
        return head + "".join(_split_body(part)[1] for part in parts) + tail
    docs = [json.loads(part) for part in parts]
    merged = dict(docs[0])
    if output_format == "json":
        merged["children"] = [page for doc in docs for page in doc.get("children") or []]
    else:  # chunks
        merged["blocks"] = [block for doc in docs for block in doc.get("blocks") or []]
        merged["page_info"] = {key: info for doc in docs for key, info in (doc.get("page_info") or {}).items()}
    return json.dumps(merged, indent=2, ensure_ascii=False)


def lost_page(output_format: str, page: int, reason: str, paginate: bool) -> str:
    """A part standing for page `page` (0-based) that could not be converted: a visible placeholder."""
    text = lost_page_text(page, reason)
    shown = f"<p class='{LOST_CLASS}'>{html.escape(text)}</p>"
    if output_format == "markdown":
        return (page_marker(page) if paginate else "") + f"> {text}"
    if output_format == "html":
        return _html_page(f"<div class='page {LOST_CLASS}' data-page-id='{page}'>{shown}</div>" if paginate else shown)
    if output_format == "json":
        return json_document([page_block(page, shown, hpcmarker_lost=reason)])
    block = {
        "id": f"/page/{page}/Text/0",
        "block_type": "Text",
        "html": shown,
        "page": page,
        "polygon": [],
        "bbox": [],
        "section_hierarchy": {},
        "images": {},
    }
    info = {str(page): {"bbox": [], "polygon": [], "hpcmarker_lost": reason}}
    return json.dumps({"blocks": [block], "page_info": info}, indent=2, ensure_ascii=False)


def lost_page_document(output_format: str, page: int, reason: str, paginate: bool) -> ConvertedDocument:
    """The placeholder part as a document: merge_documents joins it with the converted parts, and its
    metadata (`lost_pages`, a list) adds up with theirs."""
    return ConvertedDocument(
        text=lost_page(output_format, page, reason, paginate),
        format=output_format,
        metadata={"lost_pages": [{"page": page, "reason": reason}]},
    )


def page_texts(output_format: str, text: str, paginate: bool) -> list[tuple[int, str]] | None:
    """(page index, its text) for each page of a document; None where the format keeps no page
    boundaries (Markdown and HTML without pagination)."""
    if output_format == "markdown":
        if not paginate:
            return None
        pieces = _PAGE_MARKER.split(text)
        return [(int(pieces[i]), pieces[i + 1]) for i in range(1, len(pieces) - 1, 2)]
    if output_format == "html":
        if not paginate:
            return None
        pieces = _HTML_PAGE.split(_split_body(text)[1])
        return [(int(pieces[i]), html_text(pieces[i + 1]).strip()) for i in range(1, len(pieces) - 1, 2)]
    doc = json.loads(text)
    if output_format == "json":
        found = [(_page_of(page.get("id", "")), _leaf_text(page)) for page in doc.get("children") or []]
        return [(page, text) for page, text in found if page is not None]
    texts: dict[int, list[str]] = {int(key): [] for key in doc.get("page_info") or {} if str(key).isdigit()}
    for block in doc.get("blocks") or []:
        page = _page_of(block.get("id", ""))
        if page is not None:
            texts.setdefault(page, []).append(html_text(block.get("html") or ""))
    return [(page, "\n".join(parts)) for page, parts in sorted(texts.items())]
