"""What `--help` shows a new user (issue 19): submit's options in sections, examples that run as printed,
the top-level list of commands with whole descriptions."""

from __future__ import annotations

import shlex
import shutil

import pytest
from runkit import invoke

SUBMIT_SECTIONS = ["Input and output", "Resources", "Engine", "LLM", "Scheduling", "Advanced"]


def _headings(text: str) -> list[str]:
    return [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]


def test_submit_help_lists_its_options_in_sections_then_examples():
    text = invoke("submit", "--help", terminal_width=100).output
    assert _headings(text) == [*SUBMIT_SECTIONS, "Examples"], _headings(text)
    sections = text.split("\n\n")
    resources = next(s for s in sections if s.startswith("Resources:"))
    assert all(option in resources for option in ("--gpus", "--mem", "--time", "--cpus-per-task"))
    assert "--llm-" not in resources and "--mps" not in resources


@pytest.mark.parametrize("command", ["resume", "retry"])
def test_resume_and_retry_show_their_resources_as_a_section(command):
    text = invoke(command, "--help", terminal_width=100).output
    assert any(h.startswith("Resources") for h in _headings(text)) and "Other options" not in _headings(text), text


def _examples(text: str) -> list[list[str]]:
    lines = text.split("Examples:\n", 1)[1].splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.slow  # more than 5 s: the local example is a whole run
def test_submit_examples_run_as_printed(tmp_path, sample_pdfs, monkeypatch):
    from hpc_marker.submission import launch

    monkeypatch.setattr(launch, "check_engine", lambda *_: None)  # marker-pdf is not installed in this venv
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(sample_pdfs, home / "pdfs")
    examples = _examples(invoke("submit", "--help").output)
    assert 3 <= len(examples) <= 4
    for words in examples:
        assert words[:2] == ["hpcmarker", "submit"], words
        args = [word.replace("~", str(home), 1) if word.startswith("~/") else word for word in words[2:]]
        env = {}
        if "--executor" not in args:  # a Slurm run: its scripts, not checked against this machine's test cluster
            args += [] if "--dry-run" in args else ["--dry-run"]
            env["HPCMARKER_SUBMIT_EXECUTOR"] = "local"
        result = invoke("submit", *args, env=env)
        assert result.exit_code == 0, (words, result.output)


def test_top_level_help_gives_whole_descriptions():
    text = invoke("--help", terminal_width=80).output.split("Commands:", 1)[1]
    assert "..." not in text and "\u2026" not in text, text
    flat = " ".join(text.split())
    assert flat.startswith("submit Scan PDFS")  # a run's life first, not the alphabet
    assert "Scan PDFS, plan, and submit the conversion array and its collector." in flat


@pytest.mark.parametrize("group", ["llm", "templates", "config"])
def test_subgroup_help_gives_whole_descriptions(group):
    text = invoke(group, "--help", terminal_width=80).output.split("Commands:", 1)[1]
    assert "..." not in text and "\u2026" not in text, text
