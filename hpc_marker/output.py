"""Output layout: where a work item's Markdown goes, written so a crash never leaves a
half-written document under its final name.

`OUT/<relative path without .pdf>/<stem>.md` plus `<stem>_meta.json` and the images the
Markdown references, so two PDFs with the same name in different folders never collide.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

from .engines.base import ConvertedDocument


def document_dir(out_root: Path, relpath: str) -> Path:
    rel = PurePosixPath(relpath)
    return Path(out_root).joinpath(*rel.with_suffix("").parts)


def markdown_path(out_root: Path, relpath: str) -> Path:
    folder = document_dir(out_root, relpath)
    return folder / f"{folder.name}.md"


def write_document(out_root: Path, relpath: str, doc: ConvertedDocument) -> Path:
    """Write `doc` into a temporary sibling folder, then rename it into place. Returns the .md path."""
    final = document_dir(out_root, relpath)
    final.parent.mkdir(parents=True, exist_ok=True)
    stem = final.name
    staging = final.parent / f".{stem}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        (staging / f"{stem}.md").write_text(doc.markdown, encoding="utf-8")
        (staging / f"{stem}_meta.json").write_text(
            json.dumps(doc.metadata, indent=1, ensure_ascii=False, default=str), encoding="utf-8"
        )
        for name, data in doc.images.items():
            target = staging / PurePosixPath(name).name
            target.write_bytes(data)
        _replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final / f"{stem}.md"


def _replace_dir(staging: Path, final: Path) -> None:
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
