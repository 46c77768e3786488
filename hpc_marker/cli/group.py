"""The `hpcmarker` click group: defaults from the config, and the one place errors become exit codes.

A `UserError` (bad input) becomes `Error: <one line>` and exit code 2, a `Refused` (the cluster or a
server said no) the same with exit code 1; nothing else is caught, so a bug keeps its traceback. What click
itself refuses (a bad value, an unknown option, a missing argument) is one such line too, exit code 2.
Every option can also come from an HPCMARKER_<COMMAND>_<OPTION> variable. `-v/--verbose` and
`-q/--quiet` (before the command: `hpcmarker -q submit ...`) set how much the diagnostics on stderr say
(util/logs.configure); what a command prints for its user does not change.
"""

from __future__ import annotations

import click

from hpc_marker import __version__
from hpc_marker.config.types import BadValue
from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.util.errors import Refused, UserError
from hpc_marker.util.logs import configure


class InputError(click.ClickException):
    """Bad input found by the command line itself: exit code 2, nothing submitted."""

    exit_code = 2


class OneLineError(click.ClickException):
    """A UserError or Refused from below, printed as one line with its own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def usage_line(exc: click.UsageError, caught_in: click.Context | None = None) -> str:
    """What click refused, in one line: `--gpus 0: must be at least 1`, `--engine: 'x' is not one of ...`; an
    unknown option, a missing argument and the like end with the command that shows the help (that of the
    subcommand `caught_in` was calling, when click did not say where it was)."""
    ctx, param = exc.ctx, getattr(exc, "param", None)
    if isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter) and param is not None:
        name = max(param.opts, key=len) if param.opts else param.human_readable_name
        if isinstance(exc, BadValue):  # "VALUE: why", with where a value not typed here came from
            value, _, why = exc.message.partition(": ")
            return f"{name} {value}{value_source(ctx, param)}: {why}"
        return f"{name}: {' '.join(exc.message.split())}".rstrip(".")
    words = ctx.command_path.split()[1:] if ctx else []
    if ctx is None and caught_in is not None:
        words = [*caught_in.command_path.split()[1:], *filter(None, [caught_in.invoked_subcommand])]
    command = " ".join(["hpcmarker", *words])
    return f"{' '.join(exc.format_message().split()).rstrip('.')}; try: {command} --help"


def value_source(ctx: click.Context | None, param: click.Parameter) -> str:
    """` (from HPCMARKER_SUBMIT_GPUS)` or ` (from the config: ...)` for a value not given on the command line."""
    source = ctx.get_parameter_source(param.name) if ctx is not None and param.name else None
    if source is click.core.ParameterSource.ENVIRONMENT:
        envvar = getattr(param, "envvar", None) or f"{ctx.auto_envvar_prefix}_{(param.name or '').upper()}"
        return f" (from {envvar})"
    if source is click.core.ParameterSource.DEFAULT_MAP:
        return " (from the config: hpcmarker config show)"
    return ""


EXIT_INTERRUPTED = 130
VERBOSITY = "hpcmarker.verbosity"  # in ctx.meta: -v minus -q, for a command that configures logging again (llm serve)


class ListedGroup(click.Group):
    """A group whose help lists its commands in the order they were added, each with its whole first sentence."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command with the whole first sentence of its help (click cuts it to the terminal with "...")."""
        rows = [
            (name, command.get_short_help_str(limit=10**4))
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class HpcMarkerGroup(ListedGroup):
    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise OneLineError(usage_line(exc), exc.exit_code) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (UserError, Refused) as exc:
            raise OneLineError(str(exc), exc.exit_code) from None
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise OneLineError(usage_line(exc, ctx), exc.exit_code) from None
        except KeyboardInterrupt:  # Ctrl-C: the shell's 128 + SIGINT, as every command that stops on it says
            click.echo("interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None


@click.group(
    cls=HpcMarkerGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "HPCMARKER"}
)
@click.version_option(__version__, prog_name="hpcmarker")
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-v: debug).")
@click.option("-q", "--quiet", count=True, help="Fewer diagnostics on stderr: warnings and errors only.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """Convert folders of PDFs to Markdown on a Slurm GPU cluster (or locally, without Slurm)."""
    from hpc_marker.config import load_config

    ctx.meta[VERBOSITY] = verbose - quiet
    configure(verbose - quiet)
    if ctx.default_map is None:  # the config's defaults, under HPCMARKER_* variables and flags
        ctx.default_map = load_config().default_map()


def run_paths(run: str | None) -> RunPaths:
    """The run named on the command line (an id, a folder, or the latest); UserError when there is none."""
    return resolve_run(run)
