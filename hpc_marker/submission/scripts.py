"""Job scripts: the variables each role's template sees, the rendered scripts, and `--dry-run`'s text.

Pure apart from reading the templates: nothing here writes a file or submits a job.
"""

from __future__ import annotations

import math
import re
import shlex

from hpc_marker.executors.slurm import job_command, job_log_paths
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runtime.preempt import SIGNAL_LEAD_S
from hpc_marker.slurm.arrays import ArrayLayout, convert_roles, single_array
from hpc_marker.submission.templates import Raw, render_role

COLLECT_TIME = "00:30:00"
# measured: 0.33-0.34 GB peak at 10^6 items, ~0.17 GB of it imports (docs/scale.md), as if it all grew with the
# items; at least 2G, as before
COLLECT_MEM_BASE_GB, COLLECT_MEM_PER_ITEM_KB = 0.5, 0.35


def collect_memory(items: int) -> str:
    """The collector's --mem: it reads the run a PDF range at a time and keeps a few columns of each record
    (0.16-0.17 KB an item at 10^6 beyond its 168 MB of imports, docs/scale.md; twice that asked, for the margin)."""
    return f"{max(2, math.ceil(COLLECT_MEM_BASE_GB + items * COLLECT_MEM_PER_ITEM_KB / 2**20))}G"


# B: signals the batch shell, which execs Python; without B: Slurm signals only job steps (there are none)
TIME_LIMIT_SIGNAL = f"B:USR2@{SIGNAL_LEAD_S}"  # also what a preempted job gets at once (runtime/preempt.py)


def other_jobs(record: RunRecord) -> int:
    """The run's jobs besides its arrays' tasks: the collector, and the LLM service's replicas when it has one."""
    return 1 + (record.llm.replicas if record.llm else 0)


def script_role(name: str) -> str:
    """The template role of a script: 'convert-1' -> 'convert'."""
    return name.split("-", 1)[0]


def script_contexts(
    paths: RunPaths, record: RunRecord, python: str, layout: ArrayLayout | None = None
) -> dict[str, dict]:
    """The variables each script's template sees, by script name: service, one convert script per array of
    `layout` ('convert', or 'convert-0', 'convert-1', ...; default: one array of all the run's tasks), collect."""
    if layout is None:
        layout = single_array(list(range(record.tasks)), record.max_running)
    convert_out, convert_err = job_log_paths(paths.jobs, array=True)
    single_out, single_err = job_log_paths(paths.jobs, array=False)
    command = Raw(shlex.join(job_command(python, paths.jobs)))
    job = record.job_settings
    common = dict(
        job.vars,
        run_id=record.run_id,
        run_dir=str(paths.root),
        comment=f"hpcmarker:{record.run_id}",
        partition=record.partition,
        setup=[Raw(line) for line in job.setup],
        command=command,
        python=python,
        job_folder=str(paths.jobs),
        account=job.account,
        qos=job.qos,
        constraint=job.constraint,
    )
    contexts = {}
    if llm := record.llm:
        gpu_type = f"{job.llm_gres_type}:" if job.llm_gres_type else ""
        contexts["service"] = dict(
            common,
            job_name=f"hpcmarker-{record.run_id}-llm",
            llm_gpus=llm.gpus,
            llm_server=llm.server,
            llm_replicas=llm.replicas,
            gres=f"gpu:{gpu_type}{llm.gpus}",
            cpus_per_task=llm.cpus,
            mem=llm.mem,
            time=record.time_limit,
            stdout=single_out,
            stderr=single_err,
        )
    for name, array in zip(convert_roles(len(layout.arrays)), layout.arrays, strict=False):
        contexts[name] = dict(
            common,
            job_name=f"hpcmarker-{record.run_id}-convert",
            tasks=len(array.tasks),
            array=array.spec,
            gres=job.gres,
            cpus_per_task=record.cpus_per_task,
            mem=record.mem,
            time=record.time_limit,
            signal=TIME_LIMIT_SIGNAL,
            stdout=convert_out,
            stderr=convert_err,
        )
    contexts["collect"] = dict(
        common,
        job_name=f"hpcmarker-{record.run_id}-collect",
        time=COLLECT_TIME,
        mem=collect_memory(record.items),
        stdout=single_out,
        stderr=single_err,
    )
    return contexts


def render_scripts(
    paths: RunPaths, record: RunRecord, python: str, layout: ArrayLayout | None = None
) -> dict[str, str]:
    """Script name -> the sbatch script text of the run's template, in submission order (TemplateError, a
    UserError, when it cannot render)."""
    contexts = script_contexts(paths, record, python, layout)
    return {name: render_role(record.template, script_role(name), context) for name, context in contexts.items()}


def dry_run_text(scripts: dict[str, str], service_jobs: int = 1) -> str:
    """What `submit --dry-run` prints: each script's header line (how it is sent), then the script byte for byte.
    The service script is sent once per LLM replica (`service_jobs`); the arrays start after any of them."""
    arrays = [name for name in scripts if script_role(name) == "convert"]
    after_arrays = ":".join(f"<{name} job id>" for name in arrays)
    after_service = (
        "?".join(f"after:<service {r} job id>" for r in range(service_jobs))
        if service_jobs > 1
        else "after:<service job id>"
    )
    parts = []
    for name, text in scripts.items():
        role = script_role(name)
        dependency = {
            "convert": f"--dependency={after_service} " if "service" in scripts else "",
            "collect": f"--dependency=afterany:{after_arrays} ",
        }.get(role, "")
        times = f", {service_jobs} times: one job per LLM replica" if role == "service" and service_jobs > 1 else ""
        parts.append(f"### hpcmarker dry-run: {name} (sent as: sbatch {dependency}{name}.sbatch{times})\n")
        parts.append(text)
    return "".join(parts)


def split_dry_run(text: str) -> dict[str, str]:
    """Inverse of dry_run_text: script name -> script text."""
    scripts: dict[str, str] = {}
    pieces = re.split(r"^### hpcmarker dry-run: ([\w-]+) \(.*\)\n", text, flags=re.M)
    for role, body in zip(pieces[1::2], pieces[2::2], strict=False):
        scripts[role] = body
    return scripts
