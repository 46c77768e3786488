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
    return str(PurePosixPath(relpath).with_suffix(""))


def caseless(name: str) -> str:
    """`name` as a case-insensitive, normalization-insensitive filesystem compares it."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def _folders(names: Iterable[str]) -> set[str]:
    """Every folder above these names (caseless), and the reserved ones."""
    found = {caseless(folder) for folder in RESERVED}
    for name in names:
        parts = caseless(name).split("/")
        found.update("/".join(parts[:end]) for end in range(1, len(parts)))
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
    """For every PDF, its new document name, or "" where its plain name is kept. Deterministic: the
    same set of PDFs gives the same names in any order."""
    relpaths = sorted(set(relpaths))
    plain = {rel: plain_name(rel) for rel in relpaths}
    folders = _folders(plain.values())
    groups: dict[str, list[str]] = {}
    for rel in sorted(relpaths, key=lambda rel: (PurePosixPath(rel).suffix != ".pdf", rel)):
        groups.setdefault(caseless(plain[rel]), []).append(rel)
    names = dict.fromkeys(relpaths, "")
    taken = folders | {key for key in groups if key not in folders}
    renamed = sorted(rel for key, group in groups.items() for rel in (group if key in folders else group[1:]))
    for rel in renamed:
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
    return (f"note: {len(moved)} PDFs would share a document folder with another (names that differ only in "
            f"case, or a folder of the same name), so each has its own: {listed}{more} (the manifest's output)")
