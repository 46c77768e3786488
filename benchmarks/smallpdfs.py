"""Many small real PDFs for scale benchmarks: page ranges cut from the shared corpus with pypdf.

`make_small_pdfs(n, dest)` writes n PDFs of 1 to `max_pages` pages (real text layers, English and
Chinese), 100 to a folder, deterministic for a seed; files already there are kept (a cache).
"""

from __future__ import annotations

import random
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pdfs"


def make_small_pdfs(n: int, dest: Path, *, max_pages: int = 3, seed: int = 12, per_folder: int = 100) -> list[Path]:
    from pypdf import PdfReader, PdfWriter

    dest = Path(dest)
    sources = sorted(CORPUS.rglob("*.pdf"))
    if not sources:
        raise SystemExit(f"no PDFs under {CORPUS}")
    rng = random.Random(seed)
    choice = [rng.randrange(len(sources)) for _ in range(n)]  # which source each file is cut from
    made = [dest / f"f{k // per_folder:05d}" / f"doc{k:07d}.pdf" for k in range(n)]
    for source_index, source in enumerate(sources):  # one source at a time: each is parsed once
        todo = [k for k in range(n) if choice[k] == source_index and not made[k].exists()]
        if not todo:
            continue
        reader = PdfReader(str(source))
        pages = len(reader.pages)
        for k in todo:
            start = rng.randrange(pages)
            stop = min(pages, start + rng.randint(1, max_pages))
            writer = PdfWriter()
            for index in range(start, stop):
                writer.add_page(reader.pages[index])
            made[k].parent.mkdir(parents=True, exist_ok=True)
            with open(made[k], "wb") as out:
                writer.write(out)
    return made


if __name__ == "__main__":
    import sys

    print(len(make_small_pdfs(int(sys.argv[1]), Path(sys.argv[2]))))
