"""The result of a preflight check and the two helpers every check uses: `guard` (a check that raises is a failed
check, never a crash of the others) and `run_command` (a command's exit code and last line, bounded in time)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from hpc_marker.util.text import one_line

OK, WARN, FAIL = "ok", "warn", "fail"
TIMEOUT_S = 15.0  # any one command a check runs


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    detail: str
    fix: str = ""


def guard(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    """`check()` as a list of checks; an unexpected error in it becomes one failed check."""
    try:
        result = check()
    except Exception as exc:  # a check must never take the others down
        return [
            Check(
                name,
                FAIL,
                f"the check itself failed: {one_line(exc, with_type=True, empty='no detail')}",
                "report this with the detail",
            )
        ]
    return result if isinstance(result, list) else [result]


def run_command(argv: list[str], timeout_s: float = TIMEOUT_S) -> tuple[int, str]:
    """(exit code, last non-empty output line); 127 when the program is missing, 124 on timeout."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found on PATH"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {timeout_s:g}s"
    lines = [x.strip() for x in (done.stderr + "\n" + done.stdout).splitlines() if x.strip()]
    return done.returncode, (lines[-1] if lines else "")
