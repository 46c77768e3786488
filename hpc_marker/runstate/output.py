"""Output layout and crash-safe writing: staging folders renamed into place, merged parts.

A document lives at `OUT/<relative path without .pdf>/<stem>.<ext>` (`.md`, `.json` or `.html`:
engines/formats.py) with `<stem>_meta.json` and the images the document references, so two PDFs
with the same name in different folders never collide; where two names would collide all the same
(`x.pdf` and `x.PDF`), the plan gives one of them another name (planning/outnames.py: `out_name`).
A document converted again in another format replaces only its own: the folder keeps the other
format's file and images, and that conversion's metadata as `<stem>_meta-<format>.json`
(`read_meta` finds a format's). Every document (and every part of a split
PDF) is first written whole into a staging folder, then renamed into its final place: a task killed
at any instant never leaves a half-written document under a final name. Parts of a split PDF live
under the run folder and become one document only when all of them are there (`merge_parts`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

from hpc_marker.engines.base import ConvertedDocument
from hpc_marker.engines.formats import EXTENSIONS, OUTPUT_FORMATS, file_name, merge
from hpc_marker.planning.outnames import plain_name


def document_dir(out_root: Path, relpath: str, out_name: str = "") -> Path:
    """The document folder of the PDF at `relpath` (`out_name`: the plan's name for it, where it has one)."""
    return Path(out_root).joinpath(*PurePosixPath(out_name or plain_name(relpath)).parts)


def document_stem(relpath: str, out_name: str = "") -> str:
    return PurePosixPath(out_name or plain_name(relpath)).name


def document_file(out_root: Path, relpath: str, output_format: str, out_name: str = "") -> Path:
    """The document's own file (Markdown, JSON or HTML) for the PDF at `relpath`."""
    return document_dir(out_root, relpath, out_name) / file_name(document_stem(relpath, out_name), output_format)


NAME_MAX = 255  # bytes in one file name (ext4, XFS, Lustre, GPFS, NFS)
META_SUFFIX = "_meta.json"


def fit_name(stem: str, suffix: str, limit: int = NAME_MAX) -> str:
    """`stem + suffix`, or, when that is longer than a file name may be, the stem cut (at a character
    boundary) and marked with a short hash of the whole stem, so two long names stay apart. Pure."""
    name = stem + suffix
    if len(name.encode()) <= limit:
        return name
    mark = "~" + hashlib.sha1(stem.encode()).hexdigest()[:8]
    room = limit - len((mark + suffix).encode())
    return stem.encode()[:room].decode(errors="ignore") + mark + suffix


def meta_file(folder: Path, stem: str, kept_format: str | None = None) -> Path:
    """The document's metadata file: `<stem>_meta.json`, shortened where that name would be too long; with
    `kept_format`, that of the conversion in that format kept beside a newer one in another format."""
    return Path(folder) / fit_name(stem, f"_meta-{kept_format}.json" if kept_format else META_SUFFIX)


def _meta_format(path: Path) -> str | None:
    """The output format a metadata file says its document has (None: no file, or unreadable)."""
    try:
        source = json.loads(path.read_text(encoding="utf-8")).get("hpcmarker_source")
    except (OSError, ValueError, AttributeError):
        return None
    return (source or {}).get("format", "markdown") if isinstance(source, (dict, type(None))) else None


def read_meta(folder: Path, stem: str, output_format: str) -> dict:
    """The metadata of the document in `output_format` in `folder`: the one kept beside a newer conversion in
    another format, else the newest conversion's (whatever its format: its `hpcmarker_source` says).
    OSError (FileNotFoundError where there is none) or ValueError when it cannot be read."""
    kept = meta_file(folder, stem, output_format)
    newest = meta_file(folder, stem)
    chosen = kept if _meta_format(newest) != output_format and kept.is_file() else newest
    return json.loads(chosen.read_text(encoding="utf-8"))


def long_names(relpaths: list[str]) -> list[str]:
    """The PDFs whose side file `<stem>_meta.json` needs a shortened name (flagged at submit). Pure."""
    return [rel for rel in relpaths if fit_name(document_stem(rel), META_SUFFIX) != document_stem(rel) + META_SUFFIX]


def stage_document(staging_root: Path, name: str, stem: str, doc: ConvertedDocument) -> Path:
    """Write `doc` whole into a new folder under `staging_root`; returns that folder."""
    staging = Path(staging_root) / f"{name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        (staging / file_name(stem, doc.format)).write_text(doc.text, encoding="utf-8")
        meta_file(staging, stem).write_text(
            json.dumps(doc.metadata, indent=1, ensure_ascii=False, default=str), encoding="utf-8"
        )
        for image_name, data in doc.images.items():
            (staging / PurePosixPath(image_name).name).write_bytes(data)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def commit_staged(staging: Path, final: Path) -> None:
    """Rename a staged folder into its final place, replacing an older version (but its documents in other
    formats: `keep_other_formats`). FileNotFoundError when `staging` is gone (placed already), with
    nothing changed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, final)  # no older version (or an empty folder): one rename
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        if final.is_dir():
            keep_other_formats(final, staging)
        old = final.parent / f".old-{uuid.uuid4().hex}"  # not the name: a long one would not fit
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)


def keep_other_formats(old: Path, new: Path) -> None:
    """Before the staged document folder `new` replaces `old`: move into `new` what `old` holds of the
    document in other formats (files of another extension than the new one's), their files, images and
    metadata (as `<stem>_meta-<format>.json`), so that a run in another --output-format does not delete
    them. A folder with no other format is replaced whole (no stale images). Idempotent: a crash
    midway leaves the moved files in `new`, and placing it again moves the rest."""
    stem = old.name
    new_ext = next((ext for ext in set(EXTENSIONS.values()) if (new / f"{stem}.{ext}").is_file()), None)
    if new_ext is None:  # not a document folder (a part of a split PDF): replaced whole
        return
    formats = {fmt: meta_file(old, stem, fmt) for fmt in OUTPUT_FORMATS if meta_file(old, stem, fmt).is_file()}
    newest = _meta_format(meta_file(old, stem))
    if newest is not None:
        formats[newest] = meta_file(old, stem)
    kept = {
        fmt: meta
        for fmt, meta in formats.items()
        if EXTENSIONS[fmt] != new_ext and (old / file_name(stem, fmt)).is_file()
    }
    if not kept:
        return
    dropped = {meta.name for meta in formats.values()} | {meta_file(old, stem).name}
    for fmt, meta in kept.items():
        os.replace(meta, meta_file(new, stem, fmt))
    for path in old.iterdir():
        if path.name not in dropped and path.is_file() and not (new / path.name).exists():
            os.replace(path, new / path.name)


def write_document(
    out_root: Path, relpath: str, doc: ConvertedDocument, staging_root: Path | None = None, out_name: str = ""
) -> Path:
    """Stage and commit `doc` as the document for `relpath`; returns the path of its file."""
    final = document_dir(out_root, relpath, out_name)
    stem = document_stem(relpath, out_name)
    staging = stage_document(staging_root or final.parent, fit_name(f".{stem}", ".partial", NAME_MAX - 9), stem, doc)
    commit_staged(staging, final)
    return final / file_name(stem, doc.format)


def read_document(folder: Path, stem: str, output_format: str) -> ConvertedDocument:
    text_path, meta_path = folder / file_name(stem, output_format), meta_file(folder, stem)
    text = text_path.read_text(encoding="utf-8")
    metadata = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    skip = {text_path.name, meta_path.name}
    images = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name not in skip}
    return ConvertedDocument(text=text, format=output_format, images=images, metadata=metadata)


def merge_documents(parts: list[ConvertedDocument], paginate: bool) -> ConvertedDocument:
    """Parts in page order (converted ones, and placeholders for lost pages: formats.lost_page_document)
    -> one document: texts joined the way their format joins (formats.merge: page separators and
    block ids carry the PDF's own page numbers), list-valued metadata (page stats, table of
    contents, text-layer entries, lost pages) joined, other metadata from the first part, images
    united (their names carry page numbers)."""
    metadata: dict = {}
    images: dict[str, bytes] = {}
    for part in parts:
        for key, value in part.metadata.items():
            if isinstance(value, list):
                metadata.setdefault(key, [])
                metadata[key] = metadata[key] + value
            else:
                metadata.setdefault(key, value)
        images.update(part.images)
    output_format = parts[0].format
    text = merge(output_format, [p.text for p in parts], paginate)
    return ConvertedDocument(text=text, format=output_format, images=images, metadata=metadata)


def merge_parts(part_dirs: list[Path], stem: str, output_format: str, paginate: bool) -> ConvertedDocument:
    return merge_documents([read_document(folder, stem, output_format) for folder in part_dirs], paginate)
