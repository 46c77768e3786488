"""Commands for cluster admins: `templates list|show|render|check` and `config show`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

SAMPLE_RUN_ID = "20260101-000000-abcd"


class InputError(click.ClickException):
    exit_code = 2


def sample_contexts(profile: str, llm: bool = True) -> dict[str, dict]:
    """Every role's variables for a sample run on `profile` (what `templates render/check` use)."""
    from .launch import LaunchError, SubmitRequest, resolve_profile, script_contexts
    from .runs import RunPaths, RunRecord

    try:
        chosen, job = resolve_profile(SubmitRequest(pdfs=Path("."), out=Path("."), gpus=4, profile=profile))
    except LaunchError as exc:
        raise InputError(str(exc)) from None
    llm_record = {"model": "qwen2.5:7b", "gpus": 1, "parallel": 4, "ctx": None, "options": {}, "wait_timeout_s": 900,
                  "request_timeout_s": 600, "concurrency": 4, "cpus": 4, "mem": None} if llm else None
    record = RunRecord(run_id=SAMPLE_RUN_ID, created=0.0, pdfs_root="/data/pdfs", out_dir="/scratch/alice/md",
                       engine="marker", engine_options={}, executor="slurm", tasks=4, gpus=4, workers_per_gpu=1,
                       cpus_per_task=chosen["cpus_per_task"], template=chosen["template"],
                       partition=chosen["partition"] or "gpu", mem=chosen["mem"], time_limit=chosen["time"],
                       llm=llm_record, profile=profile, job_settings=job)
    paths = RunPaths(Path("/scratch/alice/md/.hpcmarker/runs") / SAMPLE_RUN_ID)
    return script_contexts(paths, record, python="/opt/venv/bin/python") | {"_template": chosen["template"]}


def _profile_for(template: str) -> str:
    from .config import load_config

    for name, profile in sorted(load_config().profiles.items()):
        if profile.get("template") == template:
            return name
    return "generic"


@click.group()
def templates() -> None:
    """sbatch templates: list, show, render and check them."""


@templates.command("list")
def list_templates() -> None:
    """Templates on the search path, and their roles."""
    from .render import ROLES, available_templates

    table = Table("template", "roles", "folder")
    for name, folder in sorted(available_templates().items()):
        table.add_row(name, ", ".join(r for r in ROLES if (folder / f"{r}.sbatch.j2").exists()), str(folder))
    Console().print(table)


@templates.command()
@click.argument("name")
def show(name: str) -> None:
    """Print template NAME's files."""
    from .render import ROLES, TemplateError, template_folder

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
    from .render import TemplateError, render_role

    contexts = sample_contexts(profile or _profile_for(name))
    try:
        click.echo(render_role(name, role, contexts[role]), nl=False)
    except TemplateError as exc:
        raise InputError(str(exc)) from None


def check_template(name: str, profile: str) -> list[str]:
    """Render every role with sample values; bash -n each; sbatch --test-only where Slurm answers.
    Returns the problems found (empty: all good)."""
    from .render import ROLES, TemplateError, render_role, template_folder

    problems = []
    folder = template_folder(name)
    contexts = sample_contexts(profile)
    for role in ROLES:
        if not (folder / f"{role}.sbatch.j2").exists():
            problems.append(f"{role}: no {role}.sbatch.j2 in {folder}")
            continue
        try:
            text = render_role(name, role, contexts[role])
        except TemplateError as exc:
            problems.append(f"{role}: {exc}")
            continue
        syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        if syntax.returncode:
            problems.append(f"{role}: bash -n: {syntax.stderr.strip().splitlines()[-1]}")
            continue
        if shutil.which("sbatch") and os.environ.get("HPCMARKER_CHECK_SBATCH", "1") == "1":
            problems += _sbatch_test_only(role, text)
    return problems


def _sbatch_test_only(role: str, text: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / f"{role}.sbatch"
        # the sample paths do not exist here: point the logs at the temp folder
        script.write_text(text.replace("/scratch/alice/md/.hpcmarker/runs", tmp))
        done = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=30)
    if done.returncode:
        return [f"{role}: sbatch --test-only: {(done.stderr or done.stdout).strip().splitlines()[-1]}"]
    return []


@templates.command()
@click.argument("name")
@click.option("--profile", help="Profile whose settings fill the template (default: one that uses NAME).")
def check(name: str, profile: str | None) -> None:
    """Render every role of NAME with sample values and check the result (bash -n, sbatch --test-only)."""
    from .render import TemplateError

    try:
        problems = check_template(name, profile or _profile_for(name))
    except TemplateError as exc:
        raise InputError(str(exc)) from None
    for problem in problems:
        click.echo(f"FAIL {name}/{problem}")
    if problems:
        sys.exit(1)
    click.echo(f"ok: template {name} renders every role, passes bash -n"
               + (" and sbatch --test-only" if shutil.which("sbatch") else ""))


@click.group()
def config() -> None:
    """hpcmarker's configuration layers."""


@config.command("show")
def show_config() -> None:
    """The effective submit defaults and profiles, and where each value comes from."""
    from .config import load_config

    cfg = load_config()
    table = Table("setting", "value", "from", title="submit defaults", title_justify="left")
    for key, value in sorted(cfg.merged("submit").items()):
        env = f"HPCMARKER_SUBMIT_{key.upper()}"
        if env in os.environ:
            table.add_row(key, os.environ[env], f"environment ({env})")
        else:
            table.add_row(key, repr(value), cfg.source("submit", key) or "-")
    console = Console()
    console.print(table)
    profiles = Table("profile", "settings", "from", title="profiles", title_justify="left")
    for name, profile in sorted(cfg.profiles.items()):
        profiles.add_row(name, ", ".join(f"{k}={v!r}" for k, v in sorted(profile.items())),
                         cfg.source("profiles", name) or "-")
    console.print(profiles)
    console.print("template search path: " + ", ".join(str(p) for p in cfg.template_path) + " (then packaged)"
                  if cfg.template_path else "template search path: packaged templates only")
    console.print("layers read: " + ", ".join(f"{layer.name} {layer.path}" for layer in cfg.layers))
