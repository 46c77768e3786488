"""Job scripts: the variables each role's template sees, the rendered scripts, and `--dry-run`'s text.

Pure apart from reading the templates: nothing here writes a file or submits a job.
"""

from __future__ import annotations

import re
import shlex

from hpc_marker.executors.slurm import job_log_paths, submitit_command
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import RunRecord
from hpc_marker.slurm.parse import array_spec
from hpc_marker.submission.templates import ROLES, Raw, render_role

COLLECT_TIME = "00:30:00"
# B: signals the batch shell, which execs Python; without B: Slurm signals only job steps (there are none)
TIME_LIMIT_SIGNAL = "B:USR2@90"


def script_contexts(paths: RunPaths, record: RunRecord, python: str,
                    task_indices: list[int] | None = None) -> dict[str, dict]:
    """The variables each role's template sees (for all tasks, or only `task_indices`)."""
    indices = task_indices if task_indices is not None else list(range(record.tasks))
    convert_out, convert_err = job_log_paths(paths.jobs, array=True)
    single_out, single_err = job_log_paths(paths.jobs, array=False)
    command = Raw(shlex.join(submitit_command(python, paths.jobs)))
    job = record.job_settings
    common = dict(job.get("vars", {}), run_id=record.run_id, run_dir=str(paths.root),
                  comment=f"hpcmarker:{record.run_id}", partition=record.partition,
                  setup=[Raw(line) for line in job.get("setup", [])], command=command, python=python,
                  job_folder=str(paths.jobs), account=job.get("account"), qos=job.get("qos"),
                  constraint=job.get("constraint"))
    contexts = {}
    if record.llm:
        gpu_type = f"{job['llm_gres_type']}:" if job.get("llm_gres_type") else ""
        contexts["service"] = dict(common, job_name=f"hpcmarker-{record.run_id}-llm", llm_gpus=record.llm["gpus"],
                                   llm_server=record.llm.get("server", "ollama"),
                                   llm_replicas=record.llm.get("replicas", 1),
                                   gres=f"gpu:{gpu_type}{record.llm['gpus']}", cpus_per_task=record.llm["cpus"],
                                   mem=record.llm["mem"], time=record.time_limit, stdout=single_out,
                                   stderr=single_err)
    return contexts | {
        "convert": dict(common, job_name=f"hpcmarker-{record.run_id}-convert", tasks=len(indices),
                        array=array_spec(indices), gres=job.get("gres"), cpus_per_task=record.cpus_per_task,
                        mem=record.mem, time=record.time_limit, signal=TIME_LIMIT_SIGNAL,
                        stdout=convert_out, stderr=convert_err),
        "collect": dict(common, job_name=f"hpcmarker-{record.run_id}-collect", time=COLLECT_TIME,
                        stdout=single_out, stderr=single_err),
    }


def render_scripts(paths: RunPaths, record: RunRecord, python: str,
                   task_indices: list[int] | None = None) -> dict[str, str]:
    """Role -> the sbatch script text of the run's template (TemplateError, a UserError, when it cannot render)."""
    contexts = script_contexts(paths, record, python, task_indices)
    return {role: render_role(record.template, role, contexts[role]) for role in ROLES if role in contexts}


def dry_run_text(scripts: dict[str, str], service_jobs: int = 1) -> str:
    """What `submit --dry-run` prints: each role's header line, then its script byte for byte."""
    after = "?".join(f"after:<service {r} job id>" for r in range(service_jobs)) if service_jobs > 1 else \
        "after:<service job id>"
    dependencies = {"convert": f"--dependency={after} " if "service" in scripts else "",
                    "collect": "--dependency=afterany:<convert job id> ", "service": ""}
    times = {"service": f", {service_jobs} times: one job per LLM replica" if service_jobs > 1 else ""}
    parts = []
    for role in ROLES:
        if role in scripts:
            parts.append(f"### hpcmarker dry-run: {role} (sent as: sbatch {dependencies[role]}{role}.sbatch"
                         f"{times.get(role, '')})\n")
            parts.append(scripts[role])
    return "".join(parts)


def split_dry_run(text: str) -> dict[str, str]:
    """Inverse of dry_run_text: role -> script text."""
    scripts: dict[str, str] = {}
    pieces = re.split(r"^### hpcmarker dry-run: (\w+) \(.*\)\n", text, flags=re.M)
    for role, body in zip(pieces[1::2], pieces[2::2]):
        scripts[role] = body
    return scripts
