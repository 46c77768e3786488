"""The one kind of error that is the user's to fix: bad input, said in one line (exit code 2).

Library code raises a subclass of `UserError` for what the user asked (a missing folder, an
unknown partition, an option the engine lacks); the command line prints its message and exits 2,
and nothing was submitted or lost. Anything else that escapes is a bug: it keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: one line, exit code 2, nothing submitted."""

    exit_code = 2


class Refused(Exception):
    """The cluster or a server refused what was asked (sbatch failed, a server did not answer):
    one line, exit code 1."""

    exit_code = 1
