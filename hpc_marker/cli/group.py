"""The `hpcmarker` click group: defaults from the config, and the one place errors become exit codes.

A `UserError` (bad input) becomes `Error: <one line>` and exit code 2, a `Refused` (the cluster or a
server said no) the same with exit code 1; nothing else is caught, so a bug keeps its traceback.
Every option can also come from an HPCMARKER_<COMMAND>_<OPTION> variable.
"""

from __future__ import annotations

import click

from hpc_marker import __version__
from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.util.errors import Refused, UserError


class InputError(click.ClickException):
    """Bad input found by the command line itself: exit code 2, nothing submitted."""

    exit_code = 2


class OneLineError(click.ClickException):
    """A UserError or Refused from below, printed as one line with its own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class HpcMarkerGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (UserError, Refused) as exc:
            raise OneLineError(str(exc), exc.exit_code) from None


@click.group(cls=HpcMarkerGroup,
             context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "HPCMARKER"})
@click.version_option(__version__, prog_name="hpcmarker")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Convert folders of PDFs to Markdown on a Slurm GPU cluster (or locally, without Slurm)."""
    from hpc_marker.config import load_config

    if ctx.default_map is None:  # the config's defaults, under HPCMARKER_* variables and flags
        ctx.default_map = load_config().default_map()


def run_paths(run: str | None) -> RunPaths:
    """The run named on the command line (an id, a folder, or the latest); UserError when there is none."""
    return resolve_run(run)
