"""Render: Jinja2 sbatch templates to script text. Pure: no files written, nothing submitted.

A template is a folder `<name>/` holding one `<role>.sbatch.j2` per role (service, convert, collect)
found on the template search path: the folders in `HPCMARKER_TEMPLATE_PATH` (colon-separated),
then those named in the user's and the site's config, then the packaged ones; the first match wins.
Every `{{ value }}` is shell-quoted by the environment itself (a path with spaces, quotes, `$()` or
backticks cannot run anything); only values wrapped in `Raw` (admin-written setup lines, the job
command) go in verbatim. Unknown variables are errors that list the valid ones.
"""

from __future__ import annotations

import os
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from hpc_marker.util.errors import UserError

ROLES = ("service", "convert", "collect")  # in the order they are submitted
PARTS = "_parts"  # shared pieces of every role's script, not a template


class TemplateError(UserError):
    """A template is missing or cannot be rendered."""


class Raw(str):
    """Shell text inserted as is (never user-controlled file names)."""


def _shell_value(value: Any) -> str:
    if isinstance(value, Raw):
        return value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(str(v)) for v in value)
    return shlex.quote(str(value))


def packaged_templates() -> Path:
    """The templates shipped with hpcmarker: hpc_marker/templates inside an installed wheel (pyproject's
    force-include puts them there), else the repository's own templates/ (a source tree, an editable install)."""
    installed = Path(str(resources.files("hpc_marker"))) / "templates"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "templates"


def template_search_path() -> list[Path]:
    """HPCMARKER_TEMPLATE_PATH, then the config files' [templates] path (user, then site), then packaged."""
    from hpc_marker.config import load_config

    extra = [Path(p) for p in os.environ.get("HPCMARKER_TEMPLATE_PATH", "").split(os.pathsep) if p]
    return [*extra, *load_config().template_path, packaged_templates()]


def available_templates() -> dict[str, Path]:
    """Template name -> its folder; earlier search-path entries shadow later ones."""
    found: dict[str, Path] = {}
    for base in template_search_path():
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            if (folder / "convert.sbatch.j2").is_file() and folder.name not in found:
                found[folder.name] = folder
    return found


def _environment(folder: Path) -> jinja2.Environment:
    """The template's own folder first, then the shared parts (`_parts/`: the #SBATCH lines every role
    repeats), which a template folder may override by holding a file of the same name."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(folder), str(packaged_templates() / PARTS)]),
        undefined=jinja2.StrictUndefined,
        finalize=_shell_value,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def template_folder(name: str) -> Path:
    templates = available_templates()
    if name not in templates:
        valid = ", ".join(sorted(templates)) or "(none)"
        raise TemplateError(f"unknown template {name!r}; available templates: {valid}")
    return templates[name]


def render_role(name: str, role: str, context: dict[str, Any]) -> str:
    """The sbatch script text for `role` of template `name`."""
    if role not in ROLES:
        raise TemplateError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    folder = template_folder(name)
    env = _environment(folder)
    try:
        template = env.get_template(f"{role}.sbatch.j2")
    except jinja2.TemplateNotFound:
        raise TemplateError(f"template {name!r} ({folder}) has no {role}.sbatch.j2") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename}:{exc.lineno}: {exc.message}") from None
    try:
        return template.render(**context)
    except jinja2.UndefinedError as exc:
        valid = ", ".join(sorted(context))
        raise TemplateError(f"{folder / (role + '.sbatch.j2')}: {exc.message}; valid variables: {valid}") from None
