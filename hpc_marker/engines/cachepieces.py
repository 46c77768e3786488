"""marker's missing cache pieces in words: which ones `hpcmarker prefetch --marker` fetches (files), which
the node must have installed (binaries, servers), and one short line naming them for a task's stop record
(the long form, with paths, is `engines.marker.missing_cache_pieces()`'s, for doctor). Pure; no marker import.
"""

from __future__ import annotations

from pathlib import Path

# What fills an empty cache, runnable as printed: prefetch's default --cache, then its env.sh into this shell
# (sbatch and the local executor pass the submitting environment on to the jobs).
PREFETCH_COMMAND = "hpcmarker prefetch --marker && source ~/.cache/hpcmarker/env.sh"
CACHE_KINDS = ("font", "model", "Hugging", "VLM", "GGUF")  # missing pieces prefetch fetches (files, not binaries)


def is_cache_piece(piece: str) -> bool:
    """A missing piece `hpcmarker prefetch --marker` fetches (a file), not one the node must have
    installed (a binary, a server). Pure."""
    return piece.split(" ", 1)[0] in CACHE_KINDS


def piece_label(piece: str) -> tuple[str, str]:
    """(kind, name) of a missing cache piece in a few words: ('model', 'layout'), ('font',
    'GoNotoCurrent-Regular.ttf'), ('GGUF file', 'surya-2.gguf'); missing_cache_pieces' own strings carry
    the paths, for doctor. Pure."""
    head = piece.split(" (", 1)[0]
    kind, _, name = head.rpartition(" ")
    kind = "model" if kind.endswith("model") else kind
    if name.endswith(".gguf"):
        return "GGUF file", Path(name).name
    if name.startswith("s3://"):
        return kind, name.removeprefix("s3://").split("/")[0]
    if "/" in name and not name.startswith("/"):  # a Hugging Face repo: without its organisation
        return kind, name.removeprefix("hf://").split("/", 1)[-1]
    return kind, Path(name).name


def describe_missing(pieces: list[str]) -> str:
    """The missing pieces in one short line: the cache files by kind, then what the node must have
    installed, with its hint ('font X; models a, b; llama-server binary (llamacpp backend; ...)'). Pure."""
    kinds: dict[str, list[str]] = {}
    for piece in pieces:
        if is_cache_piece(piece):
            kind, name = piece_label(piece)
            kinds.setdefault(kind, []).append(name)
    files = [
        f"{kind}{'s' if len(names) > 1 else ''} {', '.join(dict.fromkeys(names))}" for kind, names in kinds.items()
    ]
    return "; ".join(files + [piece for piece in pieces if not is_cache_piece(piece)])
