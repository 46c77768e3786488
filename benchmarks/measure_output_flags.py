"""Measure what the output flags are judged on (hpc_marker/quality/flags.py) over real documents.

    .venv/bin/python benchmarks/measure_output_flags.py [PDF or FOLDER ...] [--limit 200] [--json FILE]

Default: the shared corpus (/work/shared/corpus/pdfs) and examples/pdfs. Each PDF is converted by the
`text` engine (paginated Markdown, what `--engine text` writes) and checked against its text layer as
pdfium reads it (the layer a `marker` run is compared with), with the packaged thresholds. One line per
document: pages, the largest output bytes of a page and of a page over its layer, the largest repetition
share, the widest table and the largest table, and the flags raised (there must be none: docs/quality.md).
Bounded: at most --limit PDFs, each in this process, a few seconds in all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hpc_marker.engines import EngineOptions, create_engine  # noqa: E402
from hpc_marker.quality.document import pdf_text_layer, thresholds  # noqa: E402
from hpc_marker.quality.flags import Thresholds, check_output  # noqa: E402

DEFAULT_SOURCES = (Path("/work/shared/corpus/pdfs"), ROOT / "examples" / "pdfs")


def measure(pdf: Path, engine, limits: Thresholds) -> dict:
    doc = engine.convert(pdf, None)
    pages = len(doc.metadata["page_stats"])
    layer = pdf_text_layer(pdf, range(pages))
    check = check_output(doc.text, doc.format, True, pages, layer, limits)
    ratios = [p.output_bytes / max(p.layer_bytes or 0, 1) for p in check.pages if p.layer_bytes]
    return {
        "pdf": pdf.name,
        "pages": pages,
        "bytes_per_page": round(check.output_bytes / pages),
        "max_page_bytes": max((p.output_bytes for p in check.pages), default=0),
        "max_page_over_layer": round(max(ratios, default=0.0), 2),
        "max_repetition": max((p.repetition for p in check.pages), default=0.0),
        "max_columns": max((p.columns for p in check.pages), default=0),
        "max_cells": max((p.cells for p in check.pages), default=0),
        "flags": check.field(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", type=Path, default=list(DEFAULT_SOURCES))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pdfs = sorted(p for s in args.sources for p in ([s] if s.is_file() else s.rglob("*.pdf")))[: args.limit]
    engine, limits = create_engine("text", EngineOptions()), thresholds()
    rows, start = [], time.monotonic()
    for pdf in pdfs:
        rows.append(measure(pdf, engine, limits))
        row = rows[-1]
        print(
            f"{row['pdf'][:40]:40} {row['pages']:4} p {row['bytes_per_page']:6} B/p max {row['max_page_bytes']:6} B "
            f"x{row['max_page_over_layer']:<5} rep {row['max_repetition']:.3f} cols {row['max_columns']:3} "
            f"cells {row['max_cells']:5} {row['flags'] or '-'}"
        )
    keys = ("max_page_bytes", "max_page_over_layer", "max_repetition", "max_columns", "max_cells")
    print(
        f"{len(rows)} PDFs in {time.monotonic() - start:.1f} s; maxima: "
        + ", ".join(f"{k} {max((r[k] for r in rows), default=0)}" for k in keys)
        + f"; flagged: {sum(1 for r in rows if r['flags'])}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
