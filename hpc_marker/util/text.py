"""One line of text from an exception or a message: manifests, logs and errors are one line each."""

from __future__ import annotations


def one_line(what: BaseException | str, *, with_type: bool = False, empty: str | None = None) -> str:
    """The first non-empty line of `what`.

    For an exception: prefixed by its type name when `with_type`; its type name alone when its text is
    empty (or `empty`, when given). Pure."""
    text = what if isinstance(what, str) else str(what)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else None
    if isinstance(what, str):
        return first or (empty or "")
    name = type(what).__name__
    if first is None:
        return empty or name
    return f"{name}: {first}" if with_type else first


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 task`, `2 tasks`, `1,000 PDFs`: a count and its noun (`many`: the plural, where it is not noun + s).
    Pure."""
    return f"{count:,} {noun if count == 1 else many or noun + 's'}"
