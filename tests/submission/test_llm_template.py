"""The service role's sbatch template (templates/generic/service.sbatch.j2): exact rendering,
valid bash, every value shell-quoted, unknown variables are errors."""

from __future__ import annotations

import shlex
import subprocess

import jinja2
import pytest

from hpc_marker.submission.templates import Raw, _environment, packaged_templates

RUN = "/scratch/alice/md/.hpcmarker/runs/20260101-000000-abcd"
EXPECTED = f"""#!/bin/bash
# hpcmarker 20260101-000000-abcd: LLM service (vllm behind an authenticating front, 2 GPUs;
# one job per replica: 3 in this run)
#SBATCH --job-name=hpcmarker-20260101-000000-abcd-service
#SBATCH --comment=hpcmarker:20260101-000000-abcd
#SBATCH --partition=gpu
#SBATCH --gres=gpu:2
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=04:30:00
#SBATCH --output={RUN}/jobs/%j_0_log.out
#SBATCH --error={RUN}/jobs/%j_0_log.err
#SBATCH --open-mode=append
module load ollama

export SUBMITIT_EXECUTOR=slurm
exec /opt/venv/bin/python -u -m hpc_marker.util.jobrun {RUN}/jobs
"""


def context(run_dir: str = RUN, **changes) -> dict:
    values = dict(
        run_id="20260101-000000-abcd",
        run_dir=run_dir,
        job_name="hpcmarker-20260101-000000-abcd-service",
        comment="hpcmarker:20260101-000000-abcd",
        partition="gpu",
        account=None,
        qos=None,
        constraint=None,
        llm_gpus=2,
        llm_server="vllm",
        llm_replicas=3,
        gres="gpu:2",
        cpus_per_task=8,
        mem="64G",
        time="04:30:00",
        stdout=f"{run_dir}/jobs/%j_0_log.out",
        stderr=f"{run_dir}/jobs/%j_0_log.err",
        setup=[Raw("module load ollama")],
        command=Raw(shlex.join(["/opt/venv/bin/python", "-u", "-m", "hpc_marker.util.jobrun", f"{run_dir}/jobs"])),
    )
    values.update(changes)
    return values


def render(ctx: dict) -> str:
    return _environment(packaged_templates() / "generic").get_template("service.sbatch.j2").render(**ctx)


def test_service_template_renders_exactly():
    text = render(context())
    assert text == EXPECTED
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    minimal = render(context(partition=None, mem=None, setup=[]))
    assert "--partition" not in minimal and "--mem" not in minimal and "module" not in minimal


def test_service_template_quotes_every_value(tmp_path):
    evil = str(tmp_path / "x'; touch PWNED; echo '$(touch PWNED2) `touch PWNED3`")
    text = render(context(run_dir=evil, command=Raw(shlex.join(["echo", f"{evil}/jobs"])), setup=[]))
    done = subprocess.run(["bash", "-c", text], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("PWNED*"))
    assert done.stdout.strip() == f"{evil}/jobs"
    assert f"#SBATCH --output={shlex.quote(evil + '/jobs/%j_0_log.out')}" in text


def test_service_template_names_unknown_variables():
    ctx = context()
    del ctx["llm_gpus"]
    with pytest.raises(jinja2.UndefinedError, match="llm_gpus"):
        render(ctx)
