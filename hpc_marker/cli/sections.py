"""Help in sections: a click command whose --help lists its options under headings and ends with examples.

`SectionedCommand(sections={"Resources": ("gpus", "mem", ...), ...}, examples=(...))`: each option is listed
under its own heading (a `SectionedOption`'s `section`: the options made from the schema, cli/submitopts.py) or
else under the heading that names it (by parameter name), in the order the command declares them; headings come
in the order of `sections`; an option with no heading goes under "Other options" (tests/cli check that submit,
resume and retry have none; `help` names the help option).
The option column has one width in every section. Examples are written as
they are, never re-wrapped: each line pastes into bash (a `#` line says what the next one does).
"""

from __future__ import annotations

from typing import Any

import click

OTHER = "Other options"
COLUMN_MAX = 30  # click's: a longer option has its help on the next line


class SectionedOption(click.Option):
    """An option that names its --help heading."""

    def __init__(self, *args: Any, section: str = OTHER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.section = section


class SectionedCommand(click.Command):
    def __init__(
        self,
        *args: Any,
        sections: dict[str, tuple[str, ...]] | None = None,
        examples: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sections = dict(sections or {})
        self.examples = examples

    def section_of(self, ctx: click.Context, param: click.Parameter) -> str:
        if isinstance(param, SectionedOption):
            return param.section
        name = "help" if param is self.get_help_option(ctx) else param.name
        return next((title for title, names in self.sections.items() if name in names), OTHER)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {title: [] for title in [*self.sections, OTHER]}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None  # arguments: in the text
            if record is not None:
                rows.setdefault(self.section_of(ctx, param), []).append(record)
        width = min(COLUMN_MAX, max((len(term) for records in rows.values() for term, _ in records), default=0))
        for title, records in rows.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl([(term.ljust(width), text) for term, text in records], col_max=COLUMN_MAX)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if self.examples:
            with formatter.section("Examples"):
                for line in self.examples:
                    formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
