"""Output names: where each PDF's document goes under --out, unique on every filesystem. Pure.

A PDF's document folder is its relative path without `.pdf` (`a/b.pdf` -> `OUT/a/b/b.md`). Two PDFs
must never share one, on any filesystem the output may live on, case-insensitive (macOS, Windows
shares) and Unicode-normalizing (APFS) ones included. Names are compared as such filesystems compare
them (canonical caseless: NFD, casefold, NFD). A PDF is renamed when its folder would be
  - another's, compared that way (`x.pdf`, `x.PDF`, `X.pdf`): in each group, the first in sorted order
    of those whose name ends in `.pdf` (else the first) keeps its name, the others are renamed;
  - a folder holding other documents (`sub.pdf` beside `sub/in.pdf`): that folder would be replaced;
  - the run folders' home, `.hpcmarker`, at the top.
The new name keeps the folder and the stem and adds the PDF's own suffix, `x.PDF` -> `x__PDF`; where
that is taken too, a short hash of the PDF's whole relative path as well, `x.pdf` -> `x__pdf-3f2a1b`.
So a name depends on the PDFs that share it, never on the order they were found in. The plan records
each new name (`WorkItem.out_name`), and a follow-up run takes its parent's.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable
from pathlib import PurePosixPath

RESERVED = (".hpcmarker",)  # top-level folders of --out that hold no documents (runstate/layout.py)
NAME_BYTES = 250  # a renamed folder's name at most (255, less the longest extension, `.html`)


def plain_name(relpath: str) -> str:
    """A PDF's document name (its path under --out, without extension) unless renamed: `a/b.pdf` -> `a/b`."""
    leaf = relpath.rsplit("/", 1)[-1]
    if relpath[-4:].lower() == ".pdf" and len(leaf) > 4:  # every scanned PDF: no pathlib (10^6 of them)
        return relpath[:-4]
    return str(PurePosixPath(relpath).with_suffix(""))


def caseless(name: str) -> str:
    """`name` as a case-insensitive, normalization-insensitive filesystem compares it."""
    if name.isascii():
        return name.lower()
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def _folders(keys: Iterable[str]) -> set[str]:
    """Every folder above these caseless names, and the reserved ones."""
    found = {caseless(folder) for folder in RESERVED}
    for key in keys:
        end = key.rfind("/")
        while end > 0 and key[:end] not in found:  # a folder seen before: so are those above it
            found.add(key[:end])
            end = key.rfind("/", 0, end)
    return found


def _candidates(relpath: str):
    """The names `relpath` may be renamed to, in order of preference."""
    path = PurePosixPath(relpath)
    base = f"{path.stem}__{path.suffix.lstrip('.') or 'pdf'}"
    digest = hashlib.sha1(relpath.encode("utf-8")).hexdigest()
    for tag in ["", *(f"-{digest[:n]}" for n in (6, 12, 40))]:
        leaf = _cut(base, tag)
        yield str(path.with_name(leaf)) if path.parent != PurePosixPath(".") else leaf


def _cut(base: str, tag: str) -> str:
    room = NAME_BYTES - len(tag.encode())
    return base.encode()[:room].decode(errors="ignore") + tag


def output_names(relpaths: Iterable[str]) -> dict[str, str]:
    """The PDFs that get a new document name, with that name (the others keep their plain names: look them
    up with `.get(rel, "")`). Deterministic: the same set of PDFs gives the same names in any order.
    A few CPU seconds per 10^6 PDFs."""
    relpaths = list(dict.fromkeys(relpaths))
    keys = [
        rel[:-4].lower()
        if rel.isascii() and rel[-4:].lower() == ".pdf" and len(rel) > 4 and rel[-5] != "/"
        else caseless(plain_name(rel))
        for rel in relpaths
    ]  # the first: most names, fast
    folders = _folders(keys)
    seen: set[str] = set()
    shared = set()  # keys of more than one PDF, or of a folder
    for key in keys:
        if key in seen or key in folders:
            shared.add(key)
        seen.add(key)
    names: dict[str, str] = {}
    if not shared:
        return names
    groups: dict[str, list[str]] = {}
    for rel, key in zip(relpaths, keys, strict=False):
        if key in shared:
            groups.setdefault(key, []).append(rel)
    renamed = []
    for key, group in groups.items():
        group.sort(key=lambda rel: (not rel.endswith(".pdf"), rel))
        renamed += group if key in folders else group[1:]
    taken = folders | seen
    for rel in sorted(renamed):
        name = next(name for name in _candidates(rel) if caseless(name) not in taken)
        taken.add(caseless(name))
        names[rel] = name
    return names


def renamed_note(names: dict[str, str], ext: str, shown: int = 5) -> str | None:
    """The one line `submit` prints when PDFs are renamed, with the first few new names, or None."""
    moved = [(rel, name) for rel, name in sorted(names.items()) if name]
    if not moved:
        return None
    listed = ", ".join(f"{rel} -> {name}/{PurePosixPath(name).name}.{ext}" for rel, name in moved[:shown])
    more = f" and {len(moved) - shown} more" if len(moved) > shown else ""
    return (
        f"note: {len(moved)} PDFs would share a document folder with another (names that differ only in "
        f"case, or a folder of the same name), so each has its own: {listed}{more} (the manifest's output)"
    )
