"""Bad input on the command line (issue 19): bounds checked by click types shared by submit, plan, resume and
retry; every usage error click finds (a bad value, an unknown option, a missing argument) is one line, exit 2."""

from __future__ import annotations

import pytest
from runkit import LOCAL_TEXT, invoke, make_run

from hpc_marker.submission.request import LaunchError, SubmitRequest


def _one_line_refusal(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1, result.output
    assert message in result.output, result.output
    assert result.output.startswith("Error: "), result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus", "0"], "Error: --gpus 0: must be at least 1"),
        (["--cpus-per-task", "0"], "Error: --cpus-per-task 0: must be at least 1"),
        (["--mem", "lots"], "Error: --mem 'lots': not a memory size (e.g. 32G, 500M, 1T; a plain number is megabytes)"),
        (["--mem", "1.5G"], "Error: --mem '1.5G': not a memory size"),  # sbatch refuses fractions
        (["--time", "soon"], "Error: --time 'soon': use minutes, HH:MM:SS or D-HH:MM:SS"),
        (["--gpus", "two"], "Error: --gpus 'two': not a whole number"),
        (["--llm-replicas", "0"], "Error: --llm-replicas 0: must be at least 1"),
        (["--max-running", "0"], "Error: --max-running 0: must be at least 1"),
        (["--lease-seconds", "-1"], "Error: --lease-seconds -1: must be positive"),
        (["--item-timeout", "never"], "Error: --item-timeout 'never': use auto, off"),
        (["--workers-per-gpu", "0"], "Error: --workers-per-gpu '0': use auto or a number of at least 1"),
        (["--engine", "nosuch"], "Error: --engine: 'nosuch' is not one of"),
    ],
)
def test_bad_values_are_refused_in_one_line_for_a_local_run(tmp_path, sample_pdfs, args, message):
    result = invoke("submit", "--pdfs", sample_pdfs, "--out", tmp_path / "out", *LOCAL_TEXT, "--dry-run", *args)
    _one_line_refusal(result, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["32G", "500M", "1T", "2048", "8g", "16GB", "0"])
def test_memory_sizes_sbatch_takes_are_accepted(tmp_path, sample_pdfs, value):
    result = invoke(
        "submit", "--pdfs", sample_pdfs, "--out", tmp_path / "out", *LOCAL_TEXT, "--dry-run", "--mem", value
    )
    assert result.exit_code == 0, result.output
    assert f"#SBATCH --mem={value}\n" in result.output


def test_gpus_0_is_refused_for_a_local_run_at_the_request_level(tmp_path, sample_pdfs):
    request = SubmitRequest.with_defaults(sample_pdfs, tmp_path / "out", gpus=0, engine="text", executor="local")
    from hpc_marker.submission.launch import prepare_run

    with pytest.raises(LaunchError, match=r"^--gpus 0: must be at least 1"):
        prepare_run(request, create=False)


@pytest.mark.parametrize("command", ["resume", "retry"])
@pytest.mark.parametrize(
    "args, message",
    [
        (["--mem", "lots"], "Error: --mem 'lots': not a memory size"),
        (["--cpus-per-task", "0"], "Error: --cpus-per-task 0: must be at least 1"),
        (["--gpus", "0"], "Error: --gpus 0: must be at least 1"),
        (["--time", "soon"], "Error: --time 'soon': use minutes"),
    ],
)
def test_resume_and_retry_share_the_bounds(tmp_path, sample_pdfs, command, args, message):
    make_run(sample_pdfs, tmp_path / "out", gpus=2, run_id="again")
    _one_line_refusal(invoke(command, "again", *args), message)


def test_plan_shares_the_bounds(sample_pdfs):
    _one_line_refusal(invoke("plan", "--pdfs", sample_pdfs, "--gpus", "0"), "Error: --gpus 0: must be at least 1")
    _one_line_refusal(
        invoke("plan", "--pdfs", sample_pdfs, "--scan-workers", "0"), "Error: --scan-workers 0: must be at least 1"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["submit", "--pdfs", "x", "--out", "y", "--bogus"], "Error: No such option '--bogus'"),
        (["submit", "--out", "y"], "Error: Missing option '--pdfs'"),
        (["submit", "--pdfs"], "Error: Option '--pdfs' requires an argument"),
        (["nosuch"], "Error: No such command 'nosuch'"),
        (["--bogus"], "Error: No such option '--bogus'"),
        (["llm", "bench", "--bogus"], "Error: No such option '--bogus'"),
        (["status", "a", "b"], "Error: Got unexpected extra argument (b)"),
    ],
)
def test_click_usage_errors_are_one_line_with_the_help_command(args, message):
    result = invoke(*args)
    _one_line_refusal(result, message)
    command = " ".join(["hpcmarker", *(a for a in args[:2] if a in ("submit", "llm", "bench", "status"))])
    assert result.output.rstrip().endswith(f"try: {command} --help"), result.output


def test_a_bad_default_names_where_it_came_from(tmp_path, sample_pdfs):
    result = invoke(
        "submit",
        "--pdfs",
        sample_pdfs,
        "--out",
        tmp_path / "out",
        "--engine",
        "text",
        "--dry-run",
        env={"HPCMARKER_SUBMIT_CPUS_PER_TASK": "0"},
    )
    _one_line_refusal(result, "Error: --cpus-per-task 0 (from HPCMARKER_SUBMIT_CPUS_PER_TASK): must be at least 1")


def test_a_bad_value_from_the_config_names_the_config(tmp_path, sample_pdfs, monkeypatch):
    site = tmp_path / "site.toml"
    site.write_text("[submit]\nscan_workers = 0\n")
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(site))
    result = invoke("submit", "--pdfs", sample_pdfs, "--out", tmp_path / "out", "--engine", "text", "--dry-run")
    _one_line_refusal(result, "Error: --scan-workers 0 (from the config: hpcmarker config show): must be at least 1")


def test_no_arguments_still_print_the_help():
    result = invoke()
    assert "Usage:" in result.output and "submit" in result.output


@pytest.mark.parametrize("command", ["submit", "retry"])
def test_languages_is_gone_because_no_supported_marker_takes_it(command):
    """marker-pdf 1.10 and 2.0 have no languages setting (it went in 1.7: surya detects the languages)."""
    assert "--languages" not in invoke(command, "--help").output
    _one_line_refusal(invoke(command, "--languages", "en"), "Error: No such option '--languages'")


def test_an_old_run_record_with_languages_still_loads():
    from hpc_marker.engines import EngineOptions

    options = EngineOptions.from_json({"paginate": False, "languages": [], "output_format": "json"})
    assert options == EngineOptions(paginate=False, output_format="json")
    assert "languages" not in options.to_json()


@pytest.mark.slow  # more than 5 s: whole local runs
def test_counts_of_one_are_singular(tmp_path, sample_pdfs):
    """Issue 19: "1 tasks", "1 documents", "1 PDFs (1 work items)" said of one thing."""
    one = tmp_path / "one"
    one.mkdir()
    pdf = next(sample_pdfs.rglob("*.pdf"))
    (one / pdf.name).write_bytes(pdf.read_bytes())
    plan = invoke("plan", "--pdfs", one, "--min-task-pages", "1")
    assert plan.exit_code == 0 and "1 PDF (1 work item)" in plan.output, plan.output
    run = invoke(
        "submit", "--pdfs", one, "--out", tmp_path / "out", "--engine", "text", "--executor", "local", "--run-id", "one"
    )
    assert run.exit_code == 0, run.output
    assert ": 1 PDF (1 work item), " in run.output and ", 1 task (local)" in run.output, run.output
    assert "finished: 1 ok of 1 item;" in run.output, run.output
    again = invoke("submit", "--pdfs", one, "--out", tmp_path / "out", "--engine", "text", "--executor", "local")
    assert again.exit_code == 0 and "the PDF already has its outputs" in again.output, again.output
    follow = invoke("retry", "one", "--select", "failed", "--dry-run")
    assert "1 documents" not in follow.output and "1 items" not in follow.output, follow.output
