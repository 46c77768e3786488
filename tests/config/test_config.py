"""Config layers (packaged < site < user < HPCMARKER_* < flags), profiles, and `templates check`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from runkit import invoke

from hpc_marker.cli.admin import check_template
from hpc_marker.config import load_config


@pytest.fixture
def layers(tmp_path, monkeypatch):
    site, user = tmp_path / "site", tmp_path / "xdg"
    site.mkdir()
    (user / "hpcmarker").mkdir(parents=True)
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(site))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user))
    for name in [n for n in os.environ if n.startswith("HPCMARKER_SUBMIT_")]:
        monkeypatch.delenv(name)
    return site / "config.toml", user / "hpcmarker" / "config.toml"


def tasks_of_dry_run(sample_pdfs, tmp_path, *args: str) -> int:
    result = invoke(
        "submit",
        "--pdfs",
        sample_pdfs,
        "--out",
        tmp_path / "o",
        "--executor",
        "local",
        "--dry-run",
        "--min-task-pages",
        "1",
        *args,
        default_map=load_config().default_map(),
    )
    assert result.exit_code == 0, result.output
    return int(re.search(r"#SBATCH --array=0-(\d+)", result.output).group(1)) + 1


def test_each_layer_overrides_the_one_below(layers, sample_pdfs, tmp_path, monkeypatch):
    site, user = layers
    assert tasks_of_dry_run(sample_pdfs, tmp_path, "--engine", "text") == 1  # packaged: gpus = 1
    site.write_text('[submit]\ngpus = 2\nengine = "text"\n')
    assert tasks_of_dry_run(sample_pdfs, tmp_path) == 2  # site (and its engine = text is used)
    user.write_text("[submit]\ngpus = 3\n")
    assert tasks_of_dry_run(sample_pdfs, tmp_path) == 3  # user over site
    monkeypatch.setenv("HPCMARKER_SUBMIT_GPUS", "4")
    assert tasks_of_dry_run(sample_pdfs, tmp_path) == 4  # environment over files
    assert tasks_of_dry_run(sample_pdfs, tmp_path, "--gpus", "5") == 5  # the flag over everything


def test_profile_values_fill_what_the_user_did_not_set(layers, sample_pdfs, tmp_path):
    site, _ = layers
    site.write_text(
        '[profiles.big]\ntemplate = "generic"\ngres = "gpu:h100:1"\ncpus_per_task = 16\n'
        'account = "proj 7"\nsetup = ["module load cuda"]\n'
    )
    args = [
        "submit",
        "--pdfs",
        str(sample_pdfs),
        "--out",
        str(tmp_path / "o"),
        "--executor",
        "local",
        "--dry-run",
        "--engine",
        "text",
        "--profile",
        "big",
    ]
    out = invoke(*args).output
    assert "#SBATCH --gres=gpu:h100:1\n" in out and "#SBATCH --cpus-per-task=16\n" in out
    assert "#SBATCH --account='proj 7'\n" in out and "\nmodule load cuda\n" in out
    out = invoke(*args, "--cpus-per-task", "2").output
    assert "#SBATCH --cpus-per-task=2\n" in out  # an explicit flag beats the profile


def test_unknown_keys_are_errors_naming_the_valid_ones(layers):
    _site, user = layers
    user.write_text("[submit]\ngpu = 2\n")
    result = subprocess.run([sys.executable, "-m", "hpc_marker", "config", "show"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown keys gpu; valid keys:" in result.stderr and "gpus" in result.stderr
    user.write_text('[profiles.x]\ntemplate = "generic"\naccunt = "a"\n')
    with pytest.raises(Exception, match="profile 'x': unknown keys accunt; valid keys: account"):
        load_config()


def test_a_profile_marks_its_partition_preemptible_in_the_runs_record(layers, sample_pdfs, tmp_path):
    from hpc_marker.submission.launch import prepare_run
    from hpc_marker.submission.request import SubmitRequest

    site, _ = layers
    site.write_text('[profiles.scavenger]\ntemplate = "generic"\npartition = "scavenger"\npreemptible = true\n')
    for profile, preemptible in (("scavenger", True), ("generic", False)):
        request = SubmitRequest.with_defaults(
            pdfs=sample_pdfs, out=tmp_path / profile, engine="text", executor="local", profile=profile
        )
        assert prepare_run(request).paths.load_record().job_settings.preemptible is preemptible
    site.write_text('[profiles.scavenger]\ntemplate = "generic"\npreemptible = "yes"\n')
    result = subprocess.run([sys.executable, "-m", "hpc_marker", "config", "show"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith(f"{site}: profile 'scavenger': preemptible must be true or false")


def test_config_show_names_the_source_of_each_value(layers, monkeypatch):
    site, user = layers
    site.write_text('[submit]\nengine = "text"\n')
    user.write_text("[submit]\ngpus = 8\n")
    monkeypatch.setenv("HPCMARKER_SUBMIT_WORKERS_PER_GPU", "2")
    out = invoke("config", "show", terminal_width=200).output
    assert re.search(r"engine .*'text' .*site", out) and re.search(r"gpus .*8 .*user", out)
    assert re.search(r"workers_per_gpu .*2 .*environment", out) and re.search(r"profile .*'generic' .*packaged", out)


def test_config_show_lists_every_section_with_its_source_and_the_layers_looked_at(layers, monkeypatch):
    site, user = layers
    site.write_text("[job]\ncpus_per_task = 12\n[ocr]\npage_weight = 4.5\n")
    user.write_text('[quality]\nwide_table_columns = 80\n[export]\nshard_size = "1G"\n')
    monkeypatch.setenv("HPCMARKER_SUBMIT_TIME_LIMIT", "2:00:00")  # --time: [submit] time, by its option's name
    monkeypatch.setenv("HPCMARKER_RETRY_MIN_SHARE", "0.3")
    monkeypatch.setenv("COLUMNS", "400")  # rich's width: one line a row
    out = invoke("config", "show").output
    titles = [line.strip() for line in out.splitlines() if line.strip().startswith("[")]
    assert titles == ["[submit]", "[job]", "[retry]", "[export]", "[quality]", "[ocr]", "[profiles]"], out
    assert re.search(r"cpus_per_task +│ 12 +│ site +│", out) and re.search(r"page_weight +│ 4\.5 +│ site", out)
    assert re.search(r"wide_table_columns +│ 80 +│ user", out) and re.search(r"shard_size +│ '1G' +│ user", out)
    assert re.search(r"sample_pages +│ 4 +│ packaged", out) and re.search(r"follow_ups +│ True +│ packaged", out)
    assert re.search(r"time +│ 2:00:00 +│ environment \(HPCMARKER_SUBMIT_TIME_LIMIT\)", out), out
    assert re.search(r"min_share +│ 0\.3 +│ environment \(HPCMARKER_RETRY_MIN_SHARE\)", out), out
    assert f"site {site}, user {user}; then HPCMARKER_<COMMAND>_<OPTION> variables ([submit], [retry]," in out
    assert "(none there)" not in out


def test_unknown_profile_is_a_clear_error(layers, sample_pdfs, tmp_path):
    result = invoke(
        "submit",
        "--pdfs",
        sample_pdfs,
        "--out",
        tmp_path / "o",
        "--executor",
        "local",
        "--engine",
        "text",
        "--profile",
        "nope",
    )
    assert (
        result.exit_code == 2 and "unknown profile 'nope'; profiles: a100-account, apptainer, generic" in result.output
    )


def test_templates_check_rejects_unknown_variables_and_shell_errors(layers, tmp_path, monkeypatch):
    monkeypatch.setenv("HPCMARKER_CHECK_SBATCH", "0")
    folder = tmp_path / "tpl"
    for name, body in {
        "typo": "#!/bin/bash\n#SBATCH --account={{ acount }}\nexec {{ command }}\n",
        "broken": "#!/bin/bash\nif [ -n {{ run_id }} ]; then\nexec {{ command }}\n",
    }.items():
        (folder / name).mkdir(parents=True)
        for role in ("service", "convert", "collect"):
            (folder / name / f"{role}.sbatch.j2").write_text(body)
    monkeypatch.setenv("HPCMARKER_TEMPLATE_PATH", str(folder))
    problems = check_template("typo", "generic")
    assert len(problems) == 3 and "'acount' is undefined; valid variables:" in problems[0]
    problems = check_template("broken", "generic")
    assert len(problems) == 3 and "bash -n" in problems[0]
    assert check_template("generic", "generic") == []
    result = invoke("templates", "check", "typo")
    assert result.exit_code == 1 and "FAIL typo/service" in result.output


def test_templates_render_prints_what_would_be_submitted(layers):
    out = invoke("templates", "render", "apptainer", "--role", "convert").output
    assert "exec apptainer exec --nv --bind /scratch,/shared /shared/containers/hpcmarker.sif python3" in out
    listing = invoke("templates", "list", terminal_width=200).output
    assert "apptainer" in listing and "service, convert, collect" in listing


@pytest.mark.slurm
def test_templates_check_uses_sbatch_test_only_on_a_real_cluster(layers, monkeypatch):
    assert check_template("generic", "generic") == []
    problems = check_template("generic", "a100-account")  # the example profile's partition is not on this cluster
    assert problems and all("sbatch --test-only" in p for p in problems)


@pytest.mark.slurm  # the wrong profile shows as sbatch --test-only failing
def test_templates_check_fills_a_template_from_its_own_profile(tmp_path, monkeypatch):
    """With the packaged profiles, `generic` is used by a100-account too (sorted first, partition a100)."""
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    result = invoke("templates", "check", "generic")
    assert result.exit_code == 0, result.output
