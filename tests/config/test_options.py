"""The option schema (config/options.py) is the one place a submit, resume or retry option is declared: every
click option of those commands comes from it, each entry fills a request field and has a defaults.toml key (or
says why not), and a value out of bounds is refused with the same line from the command line, the config and a
library caller (issue 20)."""

from __future__ import annotations

import sys
from dataclasses import fields

import click
import pytest
from runkit import invoke

from hpc_marker.cli import cli
from hpc_marker.config import SUBMIT_KEYS, packaged_file
from hpc_marker.config.options import BY_NAME, GROUPS, OPTIONS, UNSET, options_of
from hpc_marker.engines import EngineOptions
from hpc_marker.submission.request import LaunchError, LlmRequest, SubmitRequest, check_bounds

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RETRY_OWN = {"include_poison", "selector", "min_share"}  # what retry redoes, not how a run runs: declared in cli
# Request fields no option fills, and why.
NOT_OPTIONS = {
    SubmitRequest: {"engine_options", "llm", "only", "parent"},  # made of the options' parts; follow-up runs' own
    LlmRequest: {"request_timeout_s", "concurrency", "mem", "image", "server_args"},  # the profile's or derived
    EngineOptions: {"threads", "llm", "ocr_auto"},  # set by each task at run time; ocr_auto by --force-ocr auto
}
PARTS = {"": SubmitRequest, "llm": LlmRequest, "engine_options": EngineOptions}


def _options(command: str) -> dict[str, click.Option]:
    found = cli.commands[command].params
    return {param.name: param for param in found if isinstance(param, click.Option) and param.name != "help"}


@pytest.mark.parametrize("command", ["submit", "resume", "retry", "grow"])
def test_every_option_of_the_command_comes_from_the_schema(command):
    declared = set(_options(command)) - (RETRY_OWN if command == "retry" else set())
    assert declared == {option.name for option, _ in options_of(command)}


def test_every_request_field_is_an_option_or_says_why():
    filled = {part: set() for part in PARTS}
    for option in OPTIONS:
        if option.request_field is None:
            assert option.why, f"{option.name}: no request field and no why"
            continue
        part, _, name = option.request_field.rpartition(".")
        filled[part].add(name)
    for part, cls in PARTS.items():
        names = {f.name for f in fields(cls)}
        assert filled[part] <= names, f"{cls.__name__} lacks {filled[part] - names}"
        assert names - filled[part] == NOT_OPTIONS[cls], f"{cls.__name__}: fields without an option"


def test_every_option_ends_in_a_record_field_or_says_why():
    from hpc_marker.runstate.record import RunRecord

    names = {f.name for f in fields(RunRecord)}
    for option in OPTIONS:
        if option.record_field is None:
            assert option.why, f"{option.name}: not recorded, and no why"
        else:
            assert option.record_field in names, f"{option.name}: RunRecord has no {option.record_field}"


def test_every_config_key_has_a_default_or_says_why():
    packaged = tomllib.loads(packaged_file().read_text(encoding="utf-8"))["submit"]
    assert set(packaged) <= SUBMIT_KEYS
    for option in OPTIONS:
        if option.config_key is None:
            assert option.why, f"{option.name}: not in the config, and no why"
        elif option.config_key not in packaged:
            assert option.why.startswith(UNSET), f"{option.name}: no default in defaults.toml, and no why"
            assert option.config_key in packaged_file().read_text(), f"{option.config_key}: not in defaults.toml"
    assert {option.group for option in OPTIONS} == set(GROUPS)


def test_choices_owned_above_config_are_the_owners():
    from hpc_marker.executors import NAMES
    from hpc_marker.runtime import inference, mps

    assert BY_NAME["executor"].type.choices == ("auto", *NAMES)
    assert tuple(BY_NAME["inference_server"].type.choices) == inference.CHOICES
    assert tuple(BY_NAME["mps"].type.choices) == mps.MODES


def _headings(text: str) -> list[str]:
    return [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]


@pytest.mark.parametrize(
    "command, headings",
    [
        ("submit", ["Input and output", "Resources", "Engine", "LLM", "Scheduling", "Advanced", "Examples"]),
        ("resume", ["Resources of the resubmitted tasks", "Help"]),
        ("grow", ["Resources of the new tasks", "Help"]),
        ("retry", ["Failed items", "Follow-up run", "Resources (without --select)", "Help"]),
    ],
)
def test_help_shows_the_groups(command, headings):
    assert _headings(invoke(command, "--help", terminal_width=100).output) == headings


def test_resume_takes_the_runs_values_unless_given():
    ctx = click.Context(cli.commands["resume"])
    assert {param.get_default(ctx) for param in _options("resume").values()} <= {
        None,
        False,
        getattr(click.core, "UNSET", None),
    }
    assert not any(param.show_default for param in _options("resume").values())


@pytest.mark.parametrize(
    "key, value, flag, shown, why",
    [
        ("gpus", 0, "--gpus", "0", "must be at least 1"),
        ("lease_seconds", -1.0, "--lease-seconds", "-1", "must be positive"),
        ("split_pages", -1, "--split-pages", "-1", "must be 0 (never split) or a number of pages"),
        ("time", "soon", "--time", "'soon'", "use minutes, HH:MM:SS or D-HH:MM:SS"),
        ("mem", "lots", "--mem", "'lots'", "not a memory size"),
        ("llm_wait", 0, "--llm-wait", "0", "must be positive"),
    ],
)
def test_a_value_out_of_bounds_is_one_line_from_the_flag_the_config_and_a_library_caller(
    tmp_path, sample_pdfs, monkeypatch, key, value, flag, shown, why
):
    base = ["submit", "--pdfs", sample_pdfs, "--out", tmp_path / "out", "--engine", "text", "--dry-run"]
    from_flag = invoke(*base, flag, str(value))
    site = tmp_path / "site.toml"
    site.write_text(f"[submit]\n{key} = {value!r}\n".replace("'", '"'))
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(site))
    from_config = invoke(*base)
    for result, source in ((from_flag, ""), (from_config, " (from the config: hpcmarker config show)")):
        assert result.exit_code == 2, result.output
        assert len(result.output.splitlines()) == 1, result.output
        assert result.output.startswith(f"Error: {flag} {shown}{source}: {why}"), result.output
    name = next(option.name for option in OPTIONS if option.config_key == key)
    with pytest.raises(LaunchError) as refused:
        check_bounds(**{name: value})
    assert str(refused.value).startswith(f"{flag} {shown}: {why}")


def test_plan_shares_the_bounds_of_split_pages(sample_pdfs):
    assert invoke("plan", "--pdfs", sample_pdfs, "--split-pages", "0").exit_code == 0  # 0: never split
    refused = invoke("plan", "--pdfs", sample_pdfs, "--split-pages", "-1")
    assert refused.exit_code == 2 and refused.output.startswith("Error: --split-pages -1: must be 0 (never split)")


def test_retry_with_select_names_every_resource_option_it_refuses(tmp_path, sample_pdfs):
    from runkit import make_run

    make_run(sample_pdfs, tmp_path / "out", run_id="first")
    result = invoke("retry", "first", "--select", "failed", "--gpus", "2")
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
    named = set(result.output.split(" apply to ")[0].replace(",", " ").split())
    assert {option.flag for option, _ in options_of("resume")} <= named, result.output
