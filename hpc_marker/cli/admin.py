"""Commands for checking a setup: `templates list|show|render|check`, `config show` and `doctor`.

The checks themselves live in admin/doctor.py (`templates check` and `doctor` share its template check)
and admin/checks.py; this module turns them into commands, tables and exit codes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hpc_marker.admin import doctor, prefetch
from hpc_marker.cli.group import InputError, ListedGroup
from hpc_marker.engines import ENGINE_NAMES


def sample_contexts(profile: str, llm: bool = True) -> dict[str, dict]:
    """Every role's variables for a sample run on `profile` (what `templates render/check` use)."""
    return doctor.sample_contexts(profile, llm=llm)


def _profile_for(template: str) -> str:
    from hpc_marker.config import load_config

    config = load_config()
    users = [name for name, profile in sorted(config.profiles.items()) if profile.get("template") == template]
    default = config.merged("submit").get("profile", "generic")
    for preferred in (template, default):  # the profile named like the template, else submit's default
        if preferred in users:
            return preferred
    return users[0] if users else default


@click.group(cls=ListedGroup)
def templates() -> None:
    """sbatch templates: list, show, render and check them."""


@templates.command("list")
def list_templates() -> None:
    """Templates on the search path, and their roles."""
    from hpc_marker.submission.templates import ROLES, available_templates

    table = Table("template", "roles", "folder")
    for name, folder in sorted(available_templates().items()):
        table.add_row(name, ", ".join(r for r in ROLES if (folder / f"{r}.sbatch.j2").exists()), str(folder))
    Console().print(table)


@templates.command()
@click.argument("name")
def show(name: str) -> None:
    """Print template NAME's files."""
    from hpc_marker.submission.templates import ROLES, TemplateError, template_folder

    try:
        folder = template_folder(name)
    except TemplateError as exc:
        raise InputError(str(exc)) from None
    for role in ROLES:
        path = folder / f"{role}.sbatch.j2"
        if path.exists():
            click.echo(f"### {path}\n{path.read_text()}")


@templates.command()
@click.argument("name")
@click.option("--role", type=click.Choice(["service", "convert", "collect"]), default="convert", show_default=True)
@click.option("--profile", help="Profile whose settings fill the template (default: one that uses NAME).")
def render(name: str, role: str, profile: str | None) -> None:
    """Print exactly what template NAME renders for ROLE, with sample values."""
    from hpc_marker.submission.templates import TemplateError, render_role

    contexts = sample_contexts(profile or _profile_for(name))
    try:
        click.echo(render_role(name, role, contexts[role]), nl=False)
    except TemplateError as exc:
        raise InputError(str(exc)) from None


def check_template(name: str, profile: str) -> list[str]:
    """Render every role with sample values; bash -n each; sbatch --test-only where Slurm answers.
    Returns the problems found (empty: all good); an unknown template or profile is an InputError."""
    sbatch = bool(shutil.which("sbatch")) and os.environ.get("HPCMARKER_CHECK_SBATCH", "1") == "1"
    problems = []
    for check in doctor.check_template(name, profile, sbatch=sbatch, llm=True):
        _, _, role = check.name.partition(": ")
        if check.status == doctor.FAIL and not role:
            raise InputError(check.detail)
        if check.status == doctor.FAIL:
            problems.append(f"{role}: {check.detail}")
    return problems


@templates.command()
@click.argument("name")
@click.option("--profile", help="Profile whose settings fill the template (default: one that uses NAME).")
def check(name: str, profile: str | None) -> None:
    """Render every role of NAME with sample values and check the result (bash -n, sbatch --test-only)."""
    problems = check_template(name, profile or _profile_for(name))
    for problem in problems:
        click.echo(f"FAIL {name}/{problem}")
    if problems:
        sys.exit(1)
    click.echo(
        f"ok: template {name} renders every role, passes bash -n"
        + (" and sbatch --test-only" if shutil.which("sbatch") else "")
    )


@click.group(cls=ListedGroup)
def config() -> None:
    """hpcmarker's configuration layers."""


@config.command("show")
def show_config() -> None:
    """Every section's effective values ([submit], [job], [retry], [export], [quality], [ocr]), the profiles and
    the template path, and where each value comes from: a config layer (its file on the last line) or an
    HPCMARKER_* variable."""
    from hpc_marker.config import SHOWN, load_config, packaged_file, site_file, user_file

    cfg = load_config()
    console = Console()
    for section in SHOWN:
        table = Table("setting", "value", "from", title=escape(f"[{section}]"), title_justify="left")
        for setting in cfg.settings(section):
            shown = setting.value if setting.source.startswith("environment") else repr(setting.value)
            table.add_row(setting.key, shown, setting.source)
        console.print(table)
    profiles = Table("profile", "settings", "from", title=escape("[profiles]"), title_justify="left")
    for name, profile in sorted(cfg.profiles.items()):
        profiles.add_row(
            name, ", ".join(f"{k}={v!r}" for k, v in sorted(profile.items())), cfg.source("profiles", name) or "-"
        )
    console.print(profiles)
    console.print(
        "template search path: " + ", ".join(str(p) for p in cfg.template_path) + " (then packaged)"
        if cfg.template_path
        else "template search path: packaged templates only"
    )
    read = {layer.name for layer in cfg.layers}
    looked = (("packaged", packaged_file()), ("site", site_file()), ("user", user_file()))
    console.print(
        "layers, lowest first: "
        + ", ".join(f"{name} {path}" + ("" if name in read else " (none there)") for name, path in looked)
        + escape("; then HPCMARKER_<COMMAND>_<OPTION> variables ([submit], [retry], [export]) and the command line")
    )


def _default_profile() -> str:
    """The profile `submit` would use: HPCMARKER_SUBMIT_PROFILE, else the config's [submit] profile."""
    from hpc_marker.config import load_config

    return os.environ.get("HPCMARKER_SUBMIT_PROFILE") or load_config().merged("submit").get("profile") or "generic"


def checks_table(checks: list[doctor.Check]) -> Table:
    from rich.text import Text

    colour = {doctor.OK: "green", doctor.WARN: "yellow", doctor.FAIL: "bold red"}
    table = Table(title="hpcmarker doctor", title_justify="left")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for c in checks:  # Text: details quote paths and pip extras like [marker], never markup
        table.add_row(Text(c.name), Text(c.status, style=colour[c.status]), Text(c.detail), Text(c.fix))
    return table


@click.command("doctor")
@click.option("--profile", help="Profile whose template and settings to check (default: the one `submit` uses).")
@click.option("--partition", help="Partition to check (default: the profile's, else the cluster's default).")
@click.option("--template", help="sbatch template to render and test (default: the profile's).")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder to check (writable, free space).")
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="marker", show_default=True)
@click.option("--llm", "llm_model", metavar="MODEL", help="Also check ollama and this model.")
@click.option("--min-free-gb", default=10.0, show_default=True, type=float, help="Warn under this much free space.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor_command(profile, partition, template, out, engine, llm_model, min_free_gb, as_json) -> None:
    """Preflight checks: Slurm, partition, template, marker and its cache, ollama, --out. Exit 1 on a failure."""
    request = doctor.DoctorRequest(
        profile=profile or _default_profile(),
        partition=partition,
        template=template,
        out=out,
        engine=engine,
        llm=llm_model,
        min_free_gb=min_free_gb,
    )
    checks = doctor.run_checks(request)
    if as_json:
        click.echo(json.dumps({"ok": not doctor.failed(checks), "checks": [asdict(c) for c in checks]}, indent=1))
    else:
        Console().print(checks_table(checks))
        counts = {s: sum(c.status == s for c in checks) for s in (doctor.OK, doctor.WARN, doctor.FAIL)}
        click.echo(f"{counts[doctor.OK]} ok, {counts[doctor.WARN]} warnings, {counts[doctor.FAIL]} failed")
    if doctor.failed(checks):
        raise SystemExit(1)


@click.command("prefetch")
@click.option("--marker", "with_marker", is_flag=True, help="marker's font and model weights.")
@click.option(
    "--llm",
    "llm_model",
    metavar="MODEL",
    help="Pull this Ollama model (into $OLLAMA_MODELS when set, else CACHE/ollama).",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=prefetch.DEFAULT_CACHE,
    show_default=True,
    help="Cache folder, on a file system the compute nodes see.",
)
@click.option(
    "--vlm",
    type=click.Choice(prefetch.VLM_CHOICES),
    default="auto",
    show_default=True,
    help="marker 2.x: weights of which inference backend (auto: SURYA_INFERENCE_BACKEND, else both).",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=120.0,
    show_default=True,
    type=float,
    help="Seconds a download may go without data before it fails.",
)
def prefetch_command(with_marker, llm_model, cache, vlm, timeout_s) -> None:
    """On a login node with internet: put what offline jobs need into CACHE and write CACHE/env.sh."""
    if not with_marker and not llm_model:
        raise click.UsageError("name what to fetch: --marker and/or --llm MODEL")
    if timeout_s <= 0:
        raise click.UsageError(f"--timeout {timeout_s:g}: must be positive")
    layout = prefetch.CacheLayout(cache.expanduser().resolve())
    values: dict[str, str] = {}
    try:
        if with_marker:
            result = prefetch.prefetch_marker(layout.root, timeout_s=timeout_s, vlm=vlm)
            click.echo(f"marker: {len(result.fetched)} pieces in {layout.root} ({result.seconds:.0f}s)")
            for piece in result.still_missing:
                click.echo(f"  still needed on the compute nodes (no cache holds it): {piece}", err=True)
            values |= layout.marker_env()
        if llm_model:
            models = layout.ollama_models()
            click.echo(f"pulling {llm_model} into {models}")
            prefetch.prefetch_llm(llm_model, models, log=layout.root / "prefetch-ollama.log", timeout_s=timeout_s)
            values["OLLAMA_MODELS"] = str(models)
    except prefetch.PrefetchError as exc:
        raise click.ClickException(str(exc)) from None
    lines = prefetch.write_env_file(layout.env_file, values)
    click.echo(f"wrote {layout.env_file}; jobs use the cache with:")
    for line in lines:
        click.echo(f"  {line}")
