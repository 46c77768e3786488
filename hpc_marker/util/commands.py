"""Commands hpcmarker prints for the user to run (a `next:` line, a hint): built here, so each runs as printed.

Every argument is shell-quoted (shlex.join), so a line pasted into bash is one command with exactly
these arguments: no `|` that pipes, no space that splits, no `*` that globs.
"""

from __future__ import annotations

import shlex


def command_line(*args: object) -> str:
    """`hpcmarker ARGS...` as one line for bash, each argument quoted where it needs it. Pure."""
    return shlex.join(["hpcmarker", *(str(arg) for arg in args)])


def ocr_command(run_id: str, layer: dict) -> str:
    """The follow-up that converts again, with marker and OCR, the documents of run `run_id` whose text layer
    (`layer`: a summary's text_layer counts) has empty pages (no-text) or garbled pages (garbled). Pure."""
    selectors = [name for name, key in (("no-text", "empty_pages"), ("garbled", "garbled_pages")) if layer.get(key)]
    return command_line(
        "retry", run_id, "--select", ",".join(selectors or ("no-text", "garbled")), "--engine", "marker", "--force-ocr"
    )
