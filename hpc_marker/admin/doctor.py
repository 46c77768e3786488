"""Doctor: preflight checks of this node and cluster before a run, each with a fix when it fails.

Owns: the template check (a profile's template rendered for a sample run, `bash -n`, `sbatch
--test-only`; `templates check` uses it too), `run_checks` (every check in the order a run needs
them, for `hpcmarker doctor`, whose command is in cli/admin.py) and `cheap_checks` (no scheduler, no
marker import: what `submit` can afford). The checks of each part (Slurm, the partition, marker,
ollama and the LLM model, the output folder, thread caps) are in checks.py. A check never raises:
an unexpected error becomes a failed check with a one-line detail.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.admin.checks import (
    FAIL,
    OK,
    SERVER_CHECK,
    WARN,
    Check,
    check_llm_model,
    check_marker_cache,
    check_marker_import,
    check_marker_install,
    check_marker_server,
    check_ollama,
    check_out,
    check_partition,
    check_slurm,
    check_threads,
    guard,
    run_command,
)

SAMPLE_RUN_ID = "20260101-000000-abcd"
SAMPLE_RUNS = Path("/scratch/alice/md/.hpcmarker/runs")  # where the sample run's folder would be


@dataclass
class DoctorRequest:
    profile: str = "generic"
    partition: str | None = None  # None: the profile's, else the cluster's default
    template: str | None = None  # None: the profile's
    out: Path | None = None
    engine: str = "marker"
    llm: str | None = None  # an Ollama model name
    min_free_gb: float = 10.0


def sample_contexts(
    profile: str = "generic", *, partition: str | None = None, template: str | None = None, llm: bool = True
) -> dict[str, dict]:
    """Every role's variables for a sample run (4 tasks, an LLM service) on `profile`, as `submit` builds them;
    `partition` and `template` override the profile's as submit's flags do; '_template' names the template.
    Raises LaunchError for an unknown profile."""
    from hpc_marker.engines.base import EngineOptions
    from hpc_marker.llm.settings import LlmRecord
    from hpc_marker.runstate.layout import RunPaths
    from hpc_marker.runstate.permissions import PERMISSIONS
    from hpc_marker.runstate.record import RunRecord
    from hpc_marker.submission.request import SubmitRequest, resolve_profile
    from hpc_marker.submission.scripts import script_contexts

    request = SubmitRequest.with_defaults(
        Path("."), Path("."), gpus=4, profile=profile, partition=partition, template=template
    )
    chosen, job = resolve_profile(request)
    llm_record = (
        LlmRecord(
            model="qwen2.5:7b",
            gpus=1,
            parallel=4,
            wait_timeout_s=900,
            request_timeout_s=600,
            concurrency=4,
            cpus=4,
        )
        if llm
        else None
    )
    record = RunRecord(
        run_id=SAMPLE_RUN_ID,
        created=0.0,
        pdfs_root="/data/pdfs",
        out_dir=str(SAMPLE_RUNS.parent.parent),
        engine="marker",
        engine_options=EngineOptions(),
        executor="slurm",
        tasks=4,
        gpus=4,
        workers_per_gpu=1,
        cpus_per_task=chosen["cpus_per_task"],
        template=chosen["template"],
        partition=chosen["partition"] or "gpu",
        mem=chosen["mem"],
        time_limit=chosen["time"],
        steal=request.steal,
        lease_seconds=request.lease_seconds,
        item_timeout=request.item_timeout,
        umask=PERMISSIONS[request.permissions],
        llm=llm_record,
        profile=profile,
        job_settings=job,
    )
    paths = RunPaths(SAMPLE_RUNS / SAMPLE_RUN_ID)
    return script_contexts(paths, record, python="/opt/venv/bin/python") | {"_template": chosen["template"]}


def check_template(
    template: str | None = None,
    profile: str = "generic",
    partition: str | None = None,
    *,
    sbatch: bool = False,
    llm: bool = False,
) -> list[Check]:
    """Each role of `profile`'s template (or `template`) renders for a sample run, passes `bash -n`, and (with
    `sbatch`) `sbatch --test-only`. Checks named 'template T: role'; a missing service role only warns without `llm`."""
    from hpc_marker.submission.request import LaunchError
    from hpc_marker.submission.templates import ROLES, TemplateError, render_role, template_folder

    try:
        contexts = sample_contexts(profile, partition=partition, template=template)
        template = contexts["_template"]
        template_folder(template)
    except LaunchError as exc:
        return [Check(f"profile {profile}", FAIL, str(exc), "pass --profile with one of those names")]
    except TemplateError as exc:
        return [Check(f"template {template}", FAIL, str(exc), "pass --template with one of those names")]
    checks = []
    with tempfile.TemporaryDirectory(prefix="hpcmarker-doctor-") as tmp:
        for role in ROLES:
            name = f"template {template}: {role}"
            try:
                text = render_role(template, role, contexts[role])
            except TemplateError as exc:  # a template without a service role is fine until --llm
                optional = role == "service" and not llm and "has no" in str(exc)
                fix = f"add or fix {role}.sbatch.j2 (the shipped one: hpcmarker templates show generic)" + (
                    " for --llm" if optional else ""
                )
                checks.append(Check(name, WARN if optional else FAIL, str(exc), fix))
                continue
            path = Path(tmp) / f"{role}.sbatch"
            path.write_text(text.replace(str(SAMPLE_RUNS), tmp))  # logs into a folder that exists
            code, last = run_command(["bash", "-n", str(path)])
            if code != 0:
                checks.append(Check(name, FAIL, f"bash -n: {last}", f"fix the shell syntax of {role}.sbatch.j2"))
            elif not sbatch:
                checks.append(Check(name, OK, "renders; bash -n ok"))
            else:
                code, last = run_command(["sbatch", "--test-only", str(path)])
                if code == 0:  # Slurm prints a start-time estimate (on stderr) and submits nothing
                    checks.append(Check(name, OK, "renders; bash -n ok; sbatch --test-only ok"))
                else:
                    checks.append(
                        Check(
                            name,
                            FAIL,
                            f"sbatch --test-only: {last}",
                            "adjust the template's #SBATCH lines or choose another --partition",
                        )
                    )
    return checks


def _request(request) -> DoctorRequest:
    """A DoctorRequest, or launch.SubmitRequest (its `llm` is an LlmRequest) turned into one."""
    if isinstance(request, DoctorRequest):
        return request
    llm = getattr(request, "llm", None)
    return DoctorRequest(
        profile=request.profile,
        partition=request.partition,
        template=request.template,
        out=request.out,
        engine=request.engine,
        llm=getattr(llm, "model", llm),
    )


def _profile_partition(profile: str) -> str | None:
    from hpc_marker.config import ConfigError, load_config

    try:
        return load_config().profile(profile).get("partition")
    except ConfigError:  # the template check reports the unknown profile
        return None


def cheap_checks(request) -> list[Check]:
    """Checks in well under a second, with no scheduler call and no marker import (for `submit`)."""
    req = _request(request)
    checks = guard("template", lambda: check_template(req.template, req.profile, req.partition, llm=bool(req.llm)))
    if req.engine == "marker":
        checks += guard("marker", check_marker_install)
    if req.llm:
        checks += guard("ollama", lambda: check_ollama(True))
    if req.out is not None:
        checks += guard("out", lambda: check_out(req.out, req.min_free_gb))
    return checks


def run_checks(request: DoctorRequest) -> list[Check]:
    """Every check, in the order a run needs them."""
    from hpc_marker.slurm import commands as slurm

    req = _request(request)
    checks = guard("slurm", check_slurm)
    reachable = any(c.name == "slurm: sinfo" and c.status == OK for c in checks)
    partition = req.partition or _profile_partition(req.profile)
    if reachable:
        try:
            known, default = slurm.partitions(), slurm.default_partition()
            checks.append(check_partition(partition, known, default))
            partition = partition or default
        except slurm.SlurmError as exc:
            reachable = False
            checks.append(Check("partition", FAIL, str(exc), "check that slurmctld is up (`scontrol ping`)"))
    checks += guard(
        "template", lambda: check_template(req.template, req.profile, partition, sbatch=reachable, llm=bool(req.llm))
    )
    if req.engine == "marker":
        checks += guard("marker", check_marker_install)
        if checks[-1].status == OK:
            checks += guard("marker: import", check_marker_import)
            checks += (server := guard(SERVER_CHECK, lambda: check_marker_server(req.profile)))
            starts = any(c.status == FAIL or not c.detail.startswith("none started") for c in server)
            checks += guard("marker: cache", lambda: check_marker_cache(server=starts))
    else:
        checks.append(Check("marker", OK, f"not needed (engine {req.engine})"))
    checks += guard("ollama", lambda: check_ollama(bool(req.llm)))
    if req.llm:
        checks += guard(f"llm {req.llm}", lambda: check_llm_model(req.llm))
    if req.out is not None:
        checks += guard("out", lambda: check_out(req.out, req.min_free_gb))
    return checks + guard("threads", check_threads)


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)
