"""Output flags of one converted document: what looks wrong in its output, per page where known. Pure.

Every check reads the output once (linear in its size) and compares each page with the PDF's own text
layer of that page where the format keeps page boundaries (engines/formats.page_texts), else the whole
document with the whole layer:

- **repetition**: the share of a page's word n-grams (`repetition_ngram` words; a CJK character is a word,
  so is a number) that occur at least `repetition_min_count` times on the page, on pages of at least
  `repetition_min_words` words, reaches `repetition_share` (an LLM stuck in a loop: one line, sentence or
  phrase again and again; a running header repeats once per page and stays far below), and the page's text
  layer does not reach it itself (a listing that repeats in the PDF is no loop of the engine).
- **oversize**: a page's output bytes exceed `oversize_ratio` times its text layer's bytes (at least
  `oversize_floor_kb`), or the output exceeds the run's `max_output_mb_per_page` ceiling (per page where
  known, and on average over the document). The output is kept; the flag says where to look.
- **wide-table**: a Markdown or HTML table with more than `wide_table_columns` columns, or more than
  `wide_table_cells` cells (more than a page can hold).
- **empty-output**: a page whose text layer holds at least `empty_layer_chars` characters (not counting
  whitespace) while its output holds fewer than `empty_output_below`.
- **lost-script**: a script (CJK, Hangul, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Thai) that writes at
  least `lost_script_min_chars` letters and `lost_script_min_share` of a page's letters in the text layer,
  of which the output keeps less than `lost_script_kept_share`.

The thresholds are `Thresholds` (defaults.toml's [quality], chosen from the measurements in docs/quality.md).
`check_output` returns an `OutputCheck`: the flags (each with its 0-based pages, none for the whole document)
and the statistics they were judged on; `OutputCheck.field()` is the manifest's `output_flags` value
(`parse_field` reads it back, `merge_fields` joins a split document's, `commit_tokens` is its commit-log form).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from itertools import islice
from typing import Any

from hpc_marker.engines.formats import html_text, page_texts

REPETITION, OVERSIZE, WIDE_TABLE, EMPTY_OUTPUT, LOST_SCRIPT = (
    "repetition",
    "oversize",
    "wide-table",
    "empty-output",
    "lost-script",
)
FLAG_NAMES = (REPETITION, OVERSIZE, WIDE_TABLE, EMPTY_OUTPUT, LOST_SCRIPT)
WORDS_JUDGED = 5_000  # repetition reads a page's first words: a page holds up to about 1,300, a loop shows early


@dataclass(frozen=True)
class Thresholds:
    """What raises each flag (docs/quality.md); the defaults are defaults.toml's [quality] and [submit]
    max_output_mb_per_page (quality.document.thresholds reads them)."""

    repetition_ngram: int
    repetition_min_count: int
    repetition_min_words: int
    repetition_share: float
    oversize_ratio: float
    oversize_floor_kb: float
    max_output_mb_per_page: float
    wide_table_columns: int
    wide_table_cells: int
    empty_layer_chars: int
    empty_output_below: int
    lost_script_min_chars: int
    lost_script_min_share: float
    lost_script_kept_share: float

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Thresholds:
        """The thresholds of `values` (every field; other keys ignored: a run record of a newer version)."""
        return cls(**{f.name: (int if f.type == "int" else float)(values[f.name]) for f in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Flag:
    name: str  # one of FLAG_NAMES
    pages: tuple[int, ...] = ()  # 0-based pages concerned; () where the output keeps no page boundaries

    def token(self) -> str:
        """`repetition:3,5-7` (1-based pages, runs joined), or the bare name for the whole document."""
        return f"{self.name}:{page_runs(self.pages)}" if self.pages else self.name


@dataclass(frozen=True)
class PageStats:
    """What one page (or the whole document, `page` None) was judged on."""

    page: int | None
    output_bytes: int
    layer_bytes: int | None  # None: no text layer known for it
    words: int
    repetition: float  # share of its n-grams that are repeated (0 below repetition_min_words)
    columns: int  # the widest table's columns
    cells: int  # the largest table's cells


@dataclass(frozen=True)
class OutputCheck:
    flags: tuple[Flag, ...]
    pages: tuple[PageStats, ...]
    output_bytes: int
    page_count: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(flag.name for flag in self.flags)

    def field(self) -> str:
        """The manifest's `output_flags`: space-separated tokens (Flag.token); "" when nothing was raised."""
        return " ".join(flag.token() for flag in self.flags)


def page_runs(pages: Iterable[int]) -> str:
    """0-based pages as 1-based runs without spaces: [2, 4, 5, 6] -> '3,5-7'. Pure."""
    runs: list[list[int]] = []
    for page in sorted(set(pages)):
        if runs and page == runs[-1][1] + 1:
            runs[-1][1] = page
        else:
            runs.append([page, page])
    return ",".join(f"{a + 1}" if a == b else f"{a + 1}-{b + 1}" for a, b in runs)


def flag_names(field: str | None) -> tuple[str, ...]:
    """The flag names of a manifest `output_flags` value ("" or None: none). Pure."""
    return tuple(token.split(":", 1)[0] for token in (field or "").split())


FLAG_TOKENS = {REPETITION: "R", OVERSIZE: "O", WIDE_TABLE: "W", EMPTY_OUTPUT: "E", LOST_SCRIPT: "L"}  # commit log


def parse_field(field: str | None) -> tuple[Flag, ...]:
    """The flags of a manifest `output_flags` value (Flag.token's), in FLAG_NAMES order. Pure."""
    found: dict[str, set[int]] = {}
    for token in (field or "").split():
        name, _, runs = token.partition(":")
        pages = found.setdefault(name, set())
        for run in filter(None, runs.split(",")):
            first, _, last = run.partition("-")
            pages.update(range(int(first) - 1, int(last or first)))
    return tuple(Flag(name, tuple(sorted(found[name]))) for name in FLAG_NAMES if name in found)


def merge_fields(fields: Iterable[str | None]) -> str | None:
    """One `output_flags` value for a document from its items' (a split PDF's parts); None: none judged."""
    given = [field for field in fields if field is not None]
    return " ".join(flag.token() for flag in parse_field(" ".join(given))) if given else None


def commit_tokens(field: str | None) -> str:
    """The commit log's letters of an item's output flags (`RW`: repetition and wide-table). Pure."""
    return "".join(FLAG_TOKENS[name] for name in flag_names(field) if name in FLAG_TOKENS)


# --- scripts -------------------------------------------------------------------------------------------

SCRIPTS = {
    "CJK": "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff",
    "Hangul": "\u1100-\u11ff\uac00-\ud7af",
    "Cyrillic": "\u0400-\u04ff",
    "Greek": "\u0370-\u03ff",
    "Arabic": "\u0600-\u06ff",
    "Hebrew": "\u0590-\u05ff",
    "Devanagari": "\u0900-\u097f",
    "Thai": "\u0e00-\u0e7f",
}
_SCRIPT_RES = {name: re.compile(f"[{chars}]") for name, chars in SCRIPTS.items()}
_ANY_SCRIPT = re.compile(f"[{''.join(SCRIPTS.values())}]")
_LETTER = re.compile(r"[^\W\d_]")
_CJK_CHAR = SCRIPTS["CJK"] + SCRIPTS["Hangul"]
_WORD = re.compile(f"[{_CJK_CHAR}]|[^\\W_{_CJK_CHAR}]+")  # a CJK character, or a run of letters and digits
_SPACE = re.compile(r"\s+")
_MD_TABLE_LINE = re.compile(r"^[ \t]*\|.*$", re.MULTILINE)
_HTML_CELL = re.compile(r"<(/?)(table|tr|td|th)\b", re.IGNORECASE)
_PAGE_ID = re.compile(r"^/page/(\d+)")
_HTML_TABLE = re.compile(r"<table\b.*?</table>", re.IGNORECASE | re.DOTALL)


def script_counts(text: str) -> tuple[int, dict[str, int]]:
    """(letters, letters of each script of SCRIPTS that has any). Pure."""
    return _LETTER.subn("", text)[1], {
        name: n for name, pattern in _SCRIPT_RES.items() if (n := pattern.subn("", text)[1])
    }


def lost_scripts(layer: str, output: str, limits: Thresholds) -> list[str]:
    """The scripts the text layer writes (enough letters, enough of the page's) that the output lost."""
    if not _ANY_SCRIPT.search(layer):  # most pages: Latin only, one scan
        return []
    letters, in_layer = script_counts(layer)
    lost = []
    for name, count in in_layer.items():
        if count >= limits.lost_script_min_chars and count >= limits.lost_script_min_share * letters:
            kept = _SCRIPT_RES[name].subn("", output)[1]
            if kept < limits.lost_script_kept_share * count:
                lost.append(name)
    return lost


# --- repetition and tables ------------------------------------------------------------------------------


def repetition_share(text: str, limits: Thresholds, pages: int = 1) -> tuple[int, float]:
    """(words, the share of n-grams occurring at least repetition_min_count times); 0.0 on short pages.
    Markdown table rows and HTML tables are left out (a table's cells repeat by nature), and HTML tags; the
    first WORDS_JUDGED words of each of its `pages` count (a runaway page costs no more than a long one)."""
    clean = _MD_TABLE_LINE.sub(" ", html_text(_HTML_TABLE.sub(" ", text)))
    words = [match.group() for match in islice(_WORD.finditer(clean), WORDS_JUDGED * pages)]
    n = limits.repetition_ngram
    if len(words) < max(limits.repetition_min_words, n):
        return len(words), 0.0
    grams = list(zip(*(words[i:] for i in range(n)), strict=False))  # the n-grams: the shortest slice ends them
    counts = Counter(grams)
    repeated = sum(1 for g in grams if counts[g] >= limits.repetition_min_count)
    return len(words), repeated / len(grams)


def table_shape(text: str) -> tuple[int, int]:
    """(columns of the widest table, cells of the largest), Markdown pipe tables and HTML tables. Pure."""
    columns = cells = 0
    table_cells = 0
    previous_end = -2
    for match in _MD_TABLE_LINE.finditer(text):
        row = match.group().strip().count("|") - 1
        table_cells = table_cells + row if match.start() == previous_end + 1 else row
        previous_end = match.end()
        columns, cells = max(columns, row), max(cells, table_cells)
    stack: list[list[int]] = []  # [cells so far, cells in the current row] of each open table
    for match in _HTML_CELL.finditer(text):
        closing, tag = match.group(1), match.group(2).lower()
        if tag == "table":
            if not closing:
                stack.append([0, 0])
            elif stack:
                stack.pop()
        elif stack and tag == "tr":
            stack[-1][1] = 0
        elif stack and not closing:  # td, th
            stack[-1][0] += 1
            stack[-1][1] += 1
            columns, cells = max(columns, stack[-1][1]), max(cells, stack[-1][0])
    return columns, cells


# --- the document ---------------------------------------------------------------------------------------


def _page_index(block_id: str) -> int | None:
    match = _PAGE_ID.match(block_id or "")
    return int(match.group(1)) if match else None


def _chars(text: str) -> int:
    return len("".join(text.split()))


def _page_stats(page: int | None, raw: str, layer: str | None, limits: Thresholds, pages: int = 1) -> PageStats:
    words, share = repetition_share(raw, limits, pages)
    columns, cells = table_shape(raw)
    return PageStats(
        page=page,
        output_bytes=len(raw.encode("utf-8")),
        layer_bytes=len(layer.encode("utf-8")) if layer is not None else None,
        words=words,
        repetition=round(share, 4),
        columns=columns,
        cells=cells,
    )


def _page_flags(stats: PageStats, output: str, layer: str | None, pages: int, limits: Thresholds) -> list[str]:
    """The flags of one page (or of the whole document over `pages` pages)."""
    raised = []
    if stats.repetition >= limits.repetition_share and (
        layer is None or repetition_share(layer, limits, pages)[1] < limits.repetition_share  # only when needed
    ):
        raised.append(REPETITION)
    per_page = stats.output_bytes / pages
    layer_per_page = (stats.layer_bytes or 0) / pages
    if per_page > limits.oversize_ratio * max(layer_per_page, limits.oversize_floor_kb * 1024) or (
        per_page > limits.max_output_mb_per_page * 1024 * 1024
    ):
        raised.append(OVERSIZE)
    if stats.columns > limits.wide_table_columns or stats.cells > limits.wide_table_cells:
        raised.append(WIDE_TABLE)
    if layer:
        if _chars(output) < limits.empty_output_below and _chars(layer) >= limits.empty_layer_chars * pages:
            raised.append(EMPTY_OUTPUT)
        if lost_scripts(layer, output, limits):
            raised.append(LOST_SCRIPT)
    return raised


def _markup(block: dict) -> str:
    """A JSON block's HTML: its leaves', a table whole (its cells are its children)."""
    children = block.get("children")
    if children and block.get("block_type") != "Table":
        return "\n".join(_markup(child) for child in children)
    return block.get("html") or ""


def _raw_pages(output_format: str, text: str, paginate: bool) -> list[tuple[int, str]] | None:
    """Each page's own output with its markup (tables as tables), where the format can be cut in pages:
    Markdown's pieces, JSON's and chunks' HTML of the blocks of each page (HTML: None, judged whole)."""
    if output_format == "markdown":
        return page_texts(output_format, text, paginate)
    if output_format not in ("json", "chunks"):
        return None
    doc = json.loads(text)
    blocks = doc.get("children") if output_format == "json" else doc.get("blocks")
    found: dict[int, list[str]] = {}
    for block in blocks or []:
        page = _page_index(block.get("id", ""))
        if page is not None:
            found.setdefault(page, []).append(_markup(block) if output_format == "json" else block.get("html") or "")
    return [(page, "\n".join(parts)) for page, parts in found.items()]


def check_output(
    text: str,
    output_format: str,
    paginate: bool,
    pages: int,
    layer: Mapping[int, str] | None,
    limits: Thresholds,
) -> OutputCheck:
    """The flags of a document's output `text` (of `pages` pages) against its text layer (`layer`: each
    page's text by 0-based page index; None: unknown, so empty-output and lost-script are not judged)."""
    pages = max(1, pages)
    found = page_texts(output_format, text, paginate)
    raw = dict(_raw_pages(output_format, text, paginate) or [])
    stats: list[PageStats] = []
    raised: dict[str, list[int]] = {}
    whole: set[str] = set()
    for page, output in found or []:
        layer_text = layer.get(page) if layer is not None else None
        page_stats = _page_stats(page, raw.get(page, output), layer_text, limits)
        stats.append(page_stats)
        for name in _page_flags(page_stats, output, layer_text, 1, limits):
            raised.setdefault(name, []).append(page)
    embeds = output_format in ("json", "chunks")  # their blocks' HTML counts, not the images they embed
    output_bytes = sum(len(part.encode("utf-8")) for part in raw.values()) if embeds else len(text.encode("utf-8"))
    if found is None:  # no page boundaries: the document as a whole
        layer_all = "\n".join(layer.values()) if layer is not None else None
        stats.append(_page_stats(None, text, layer_all, limits, pages))
        plain = html_text(text) if output_format == "html" else text
        whole.update(_page_flags(stats[-1], plain, layer_all, pages, limits))
    else:  # the tables a page split cannot see (JSON, HTML), and the document's own size
        columns, cells = table_shape(text) if not raw else (0, 0)
        if columns > limits.wide_table_columns or cells > limits.wide_table_cells:
            whole.add(WIDE_TABLE)
        if output_bytes / pages > limits.max_output_mb_per_page * 1024 * 1024:
            whole.add(OVERSIZE)
    flags = tuple(
        Flag(name, tuple(sorted(raised.get(name, ())))) for name in FLAG_NAMES if name in raised or name in whole
    )
    return OutputCheck(flags=flags, pages=tuple(stats), output_bytes=output_bytes, page_count=pages)
