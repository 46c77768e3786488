"""The click options of `submit`, `resume`, `retry` and `grow`, made from the option schema (config/options.py).

`schema_options(command)` applies the options the schema gives `command`, each under its --help heading
(HEADINGS: the command's title for each group) with the help it has there; `sections(command)` is the heading
list for SectionedCommand. On `resume`, `retry` and `grow` nothing has a default: None keeps the run's value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from hpc_marker.cli.sections import SectionedOption
from hpc_marker.config.options import Option, Use, options_of

HEADINGS = {
    "submit": {
        "input_output": "Input and output",
        "resources": "Resources",
        "engine": "Engine",
        "llm": "LLM",
        "scheduling": "Scheduling",
        "advanced": "Advanced",
    },
    "resume": {"resources": "Resources of the resubmitted tasks"},
    "grow": {"resources": "Resources of the new tasks"},
    "retry": {"follow_up": "Follow-up run", "resources": "Resources (without --select)"},
}
HELP_UNDER = {"submit": "advanced"}  # the group --help itself is listed under (else its own "Help" heading)


def sections(command: str, first: dict[str, tuple[str, ...]] | None = None) -> dict[str, tuple[str, ...]]:
    """SectionedCommand's headings for `command`: `first` (its own options, by name), then the schema's groups,
    with --help under HELP_UNDER's group or a last "Help" heading."""
    titles = HEADINGS[command]
    found: dict[str, tuple[str, ...]] = dict(first or {})
    for title in titles.values():
        found.setdefault(title, ())
    if command in HELP_UNDER:
        found[titles[HELP_UNDER[command]]] = ("help",)
    else:
        found["Help"] = ("help",)
    return found


def click_option(option: Option, use: Use, command: str) -> Callable:
    """The click option of `option` as `command` takes it."""
    flag = use.flag or option.flag
    kwargs: dict[str, Any] = {
        "cls": SectionedOption,
        "section": HEADINGS[command][use.group],
        "help": use.help,
        "type": None if "/" in flag else option.type,  # a pair is a boolean (retry's --force-ocr/--no-force-ocr)
        "metavar": option.metavar,
        "required": option.required,
        "multiple": option.multiple,
        "show_default": option.show_default and command == "submit",
    }
    if "/" in flag:
        kwargs["default"] = None  # unset: the config's default (submit), the run's value (resume, retry)
    elif option.is_flag:
        kwargs["is_flag"] = True
    elif option.flag_value is not None:  # `--force-ocr` alone, or `--force-ocr auto`
        kwargs.update(is_flag=False, flag_value=option.flag_value, default=None)
    return click.option(flag, option.name, **kwargs)


def schema_options(command: str) -> Callable:
    """Decorator: the schema's options of `command` (in the schema's order)."""

    def apply(function: Callable) -> Callable:
        for option, use in reversed(options_of(command)):
            function = click_option(option, use, command)(function)
        return function

    return apply
