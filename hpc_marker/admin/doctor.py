"""Doctor: preflight checks of this node and cluster before a run, each with a fix when it fails.

Owns: the `Check` result, one small function per check (Slurm and accounting, the partition's
GPUs, a profile's template rendered for a sample run, marker's install, import, inference server and cache,
ollama and the LLM model, the output folder, thread caps), `run_checks` (everything, for
`hpcmarker doctor`, whose command is in admin_cli.py) and `cheap_checks` (no scheduler, no
marker import: what `submit` can afford). `templates check` uses the same template check. A
check never raises: an unexpected error becomes a failed check with a one-line detail.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.admin.checks import FAIL, OK, WARN, Check, guard, run_command
from hpc_marker.util.text import one_line

SAMPLE_RUN_ID = "20260101-000000-abcd"
SAMPLE_RUNS = Path("/scratch/alice/md/.hpcmarker/runs")  # where the sample run's folder would be
PREFETCH_FIX = "on a login node with internet: {}"  # engines/cachepieces.py's PREFETCH_COMMAND
SERVER_CHECK = "marker: inference server"


@dataclass
class DoctorRequest:
    profile: str = "generic"
    partition: str | None = None  # None: the profile's, else the cluster's default
    template: str | None = None  # None: the profile's
    out: Path | None = None
    engine: str = "marker"
    llm: str | None = None  # an Ollama model name
    min_free_gb: float = 10.0


def check_slurm() -> list[Check]:
    """sinfo answers (the cluster is reachable) and sacct answers (accounting, which `status` needs)."""
    from hpc_marker.slurm import commands as slurm

    if shutil.which("sinfo") is None:
        return [
            Check(
                "slurm",
                WARN,
                "sinfo is not on PATH: no Slurm here, `submit` runs on this machine",
                "run on a Slurm login node (or load the Slurm module) to use the cluster",
            )
        ]
    try:
        found = slurm.partitions()
        checks = [Check("slurm: sinfo", OK, f"{len(found)} partitions: {', '.join(sorted(found))}")]
    except slurm.SlurmError as exc:
        checks = [Check("slurm: sinfo", FAIL, str(exc), "check SLURM_CONF and that slurmctld is up (`scontrol ping`)")]
    code, last = run_command(["sacct", "--noheader", "-X", "--starttime", "now", "--format=JobID", "--parsable2"])
    if code == 0:
        checks.append(Check("slurm: sacct", OK, "accounting answers"))
    else:
        checks.append(
            Check(
                "slurm: sacct",
                FAIL,
                f"sacct: {last or f'exit code {code}'}",
                "`hpcmarker status` needs Slurm accounting: ask the admins to enable slurmdbd",
            )
        )
    return checks


def check_partition(partition: str | None, known: dict[str, str], default: str | None) -> Check:
    """The partition (given, else the cluster's default) exists and has GPUs in its GRES."""
    gpu_parts = sorted(p for p, gres in known.items() if "gpu" in gres)
    hint = f"pass --partition {' or '.join(gpu_parts)}" if gpu_parts else "no partition here has GPUs in its GRES"
    name = partition or default
    if name is None:
        return Check("partition", FAIL, "no --partition and the cluster has no default partition", hint)
    if name not in known:
        return Check(f"partition {name}", FAIL, f"no such partition; partitions: {', '.join(sorted(known))}", hint)
    if "gpu" not in known[name]:
        return Check(f"partition {name}", FAIL, f"no GPUs (GRES {known[name] or 'none'})", hint)
    return Check(f"partition {name}", OK, f"GRES {known[name]}" + ("" if partition else " (the default partition)"))


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


def check_marker_install() -> Check:
    """marker-pdf installed (package metadata only, no import) and a version hpcmarker supports."""
    from hpc_marker.engines.marker import INSTALL_HINT, SUPPORTED, _series, marker_version

    version = marker_version()
    wanted = ", ".join(f"{a}.{b}.x" for a, b in SUPPORTED)
    if version is None:
        return Check("marker", FAIL, f"marker-pdf is not installed for {sys.executable}", INSTALL_HINT.split(": ")[-1])
    if _series(version) not in SUPPORTED:
        return Check(
            "marker",
            FAIL,
            f"marker-pdf {version} is not a supported version ({wanted})",
            f'pip install "marker-pdf=={wanted.split(", ")[-1].replace(".x", ".*")}"',
        )
    return Check("marker", OK, f"marker-pdf {version} (supported: {wanted})")


def _import(name: str) -> object:
    return importlib.import_module(name)


def check_marker_import() -> Check:
    """`import marker.models` works (catches broken torch/torchvision builds)."""
    started = time.monotonic()
    try:
        _import("marker.models")
    except Exception as exc:
        return Check(
            "marker: import",
            FAIL,
            f"import marker.models: {one_line(exc, with_type=True, empty='no detail')}",
            "reinstall torch and torchvision as a matching pair (docs/marker-versions.md, Installing)",
        )
    return Check("marker: import", OK, f"import marker.models took {time.monotonic() - started:.1f}s")


def check_marker_cache(server: bool = False) -> Check:
    """The font, weights and (2.x) inference pieces marker needs are on this node: no download at run time.
    `server`: the task starts marker 2.x's VLM server itself (only its weights are needed here)."""
    from hpc_marker.engines.cachepieces import PREFETCH_COMMAND, is_cache_piece
    from hpc_marker.engines.marker import missing_cache_pieces

    missing = missing_cache_pieces(server=server)
    if not missing:
        return Check("marker: cache", OK, "font and model weights present on this node")
    node = [p for p in missing if not is_cache_piece(p)]
    fix = PREFETCH_FIX.format(PREFETCH_COMMAND) + (f"; not a cache: {'; '.join(node)}" if node else "")
    if len(node) == len(missing):
        fix = "; ".join(node)
    return Check("marker: cache", FAIL, f"missing: {'; '.join(missing)}", fix)


def check_marker_server(profile: str) -> list[Check]:
    """marker 2.x: the inference server's binary (vllm, apptainer/singularity) is where the profile's jobs look."""
    from hpc_marker.config import ConfigError, load_config
    from hpc_marker.engines.marker import marker_version
    from hpc_marker.runtime import inference

    try:
        keys = {k: v for k, v in load_config().profile(profile).items() if k.startswith("inference_")}
        settings = inference.settings_for_run(None, keys, "marker", marker_version())
    except ConfigError:  # the template check names the unknown profile
        return []
    except inference.InferenceConfigError as exc:
        return [Check(SERVER_CHECK, FAIL, str(exc), f"fix the inference_* settings of profile {profile}")]
    mode, why = inference.effective_mode(settings, marker_version(), os.environ)
    what, _, fix = (inference.server_preflight(settings, marker_version()) or "").partition(": ")
    return [
        Check(SERVER_CHECK, FAIL, what, fix)
        if what
        else Check(SERVER_CHECK, OK, f"none started: {why}" if mode == "off" else f"{mode} ({why}): its binary is here")
    ]


def check_ollama(required: bool) -> Check:
    from hpc_marker.llm.process import OllamaError, find_ollama

    try:
        return Check("ollama", OK, find_ollama())
    except OllamaError as exc:
        return Check(
            "ollama",
            FAIL if required else WARN,
            str(exc) + ("" if required else " (only --llm needs it)"),
            "install Ollama or load its module on the nodes the LLM service job runs on",
        )


def ollama_url(host: str | None = None) -> str:
    """OLLAMA_HOST as ollama writes it (`host:port`, `0.0.0.0`, a URL) to a URL this node can call."""
    value = (host or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434").strip().rstrip("/")
    scheme, _, rest = value.rpartition("://")
    hostport = rest.split("/", 1)[0]
    name, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
    name = "127.0.0.1" if name in ("", "0.0.0.0") else name
    return f"{scheme or 'http'}://{name}:{port or '11434'}"


def manifest_path(models_dir: Path, model: str) -> Path:
    """Where a real Ollama keeps MODEL's manifest: manifests/<registry>/<namespace>/<name>/<tag>."""
    name, _, tag = model.rpartition(":") if ":" in model.rsplit("/", 1)[-1] else (model, "", "latest")
    parts = name.split("/")
    if len(parts) == 1:
        parts = ["library", *parts]
    if len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    return models_dir.joinpath("manifests", *parts, tag)


def check_llm_model(
    model: str, host: str | None = None, models_dir: str | None = None, timeout_s: float = 2.0
) -> Check:
    """MODEL is on the Ollama server at OLLAMA_HOST (when one answers) or its manifest is in OLLAMA_MODELS."""
    import httpx
    import ollama

    from hpc_marker.llm.client import ollama_client
    from hpc_marker.llm.settings import normalize_model

    url = ollama_url(host)
    folder = Path(models_dir or os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")
    fix = f"on a login node: hpcmarker prefetch --llm {model} (into the OLLAMA_MODELS the jobs use)"
    client = ollama_client(url, timeout_s)
    try:
        if normalize_model(model) in {normalize_model(m.model) for m in client.list().models if m.model}:
            return Check(f"llm {model}", OK, f"on the Ollama at {url}")
        server = f"not on the Ollama at {url}"
    except (httpx.HTTPError, ConnectionError, ollama.ResponseError):
        server = f"no Ollama answers at {url}"
    if manifest_path(folder, model).is_file():
        return Check(f"llm {model}", OK, f"manifest in OLLAMA_MODELS={folder} (blobs not verified; {server})")
    return Check(f"llm {model}", FAIL, f"{server}, and no manifest in OLLAMA_MODELS={folder}", fix)


def check_out(out: Path, min_free_gb: float = 10.0) -> Check:
    """OUT is (or can be made) a writable folder with at least `min_free_gb` free."""
    out = Path(out).expanduser()
    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    if base.exists() and not base.is_dir():
        return Check(f"out {out}", FAIL, f"{base} is not a folder", "choose another --out")
    try:
        if base == out:
            with tempfile.NamedTemporaryFile(dir=out, prefix=".hpcmarker-doctor-"):
                pass
        elif not os.access(base, os.W_OK | os.X_OK):
            raise PermissionError(f"{base} is not writable")
    except OSError as exc:
        return Check(f"out {out}", FAIL, f"cannot write there ({exc.strerror or exc})", "choose a folder you can write")
    free_gb = shutil.disk_usage(base).free / 1e9
    where = "writable" if base == out else f"can be created (under {base})"
    if free_gb < min_free_gb:
        return Check(
            f"out {out}",
            WARN,
            f"{where}; only {free_gb:.1f} GB free (< {min_free_gb:g} GB)",
            "free space or choose another --out (Markdown, images and logs land there)",
        )
    return Check(f"out {out}", OK, f"{where}; {free_gb:.0f} GB free")


def check_threads(env: dict[str, str] | None = None, cpus: int | None = None) -> Check:
    """OMP_NUM_THREADS unset on a many-core node: fine for hpcmarker's tasks (they cap themselves), not by hand."""
    env = os.environ if env is None else env
    cpus = cpus or os.cpu_count() or 1
    if env.get("OMP_NUM_THREADS"):
        return Check("threads", OK, f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} ({cpus} CPUs)")
    if cpus > 16:
        return Check(
            "threads",
            WARN,
            f"OMP_NUM_THREADS unset on {cpus} CPUs: hpcmarker's tasks cap their threads, "
            "but marker run by hand starts a thread per CPU in every pool",
            "export OMP_NUM_THREADS=4",
        )
    return Check("threads", OK, f"OMP_NUM_THREADS unset; {cpus} CPUs")


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
