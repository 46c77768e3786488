"""doctor: each check alone, with fakes (PATH shims, monkeypatched marker, the stand-in ollama), and
the whole command against the real test cluster where one answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runkit import invoke
from standin.harness import StandinOllama, free_port, path_with_standin, seed_model

from hpc_marker.admin import checks, doctor
from hpc_marker.admin.checks import FAIL, OK, WARN, Check
from hpc_marker.admin.doctor import DoctorRequest
from hpc_marker.engines import marker as marker_engine
from hpc_marker.submission.request import SubmitRequest


def shim(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + script + "\n")
    (bin_dir / name).chmod(0o755)


def test_partition_must_exist_and_have_gpus():
    known = {"gpu": "gpu:4", "cpu": "(null)"}
    assert checks.check_partition("gpu", known, "cpu").status == OK
    nope = checks.check_partition("nope", known, "gpu")
    assert nope.status == FAIL and "cpu, gpu" in nope.detail and nope.fix == "pass --partition gpu"
    cpu = checks.check_partition(None, known, "cpu")
    assert (cpu.name, cpu.status) == ("partition cpu", FAIL) and "no GPUs" in cpu.detail
    assert checks.check_partition(None, {"cpu": "(null)"}, None).fix == "no partition here has GPUs in its GRES"


def test_slurm_missing_answering_and_broken(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    shim(bin_dir, "bash", 'exec /bin/bash "$@"')
    monkeypatch.setenv("PATH", str(bin_dir))
    [none] = checks.check_slurm()
    assert none.status == WARN and "no Slurm here" in none.detail
    shim(bin_dir, "sinfo", 'echo "gpu*|gpu:2"')
    shim(bin_dir, "sacct", 'echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1')
    sinfo, sacct = checks.check_slurm()
    assert (sinfo.status, sacct.status) == (OK, FAIL)
    assert "accounting storage is disabled" in sacct.detail and "slurmdbd" in sacct.fix
    shim(bin_dir, "sinfo", 'echo "slurm_load_partitions: Unable to contact slurm controller" >&2; exit 1')
    sinfo, _ = checks.check_slurm()
    assert sinfo.status == FAIL and "Unable to contact" in sinfo.detail and "scontrol ping" in sinfo.fix


def write_template(root: Path, name: str, convert: str, service: bool = True) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "convert.sbatch.j2").write_text(convert)
    (folder / "collect.sbatch.j2").write_text("#!/bin/bash\nexec {{ command }}\n")
    if service:
        (folder / "service.sbatch.j2").write_text("#!/bin/bash\nexec {{ command }}\n")


def test_template_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCMARKER_TEMPLATE_PATH", str(tmp_path))
    checks = doctor.check_template("generic", partition="gpu")
    assert [c.status for c in checks] == [OK, OK, OK] and checks[1].name == "template generic: convert"
    write_template(tmp_path, "badsyntax", "#!/bin/bash\nif then fi {{ command }}\n")
    convert = doctor.check_template("badsyntax")[1]
    assert convert.status == FAIL and convert.detail.startswith("bash -n:") and "convert.sbatch.j2" in convert.fix
    write_template(tmp_path, "badvar", "#!/bin/bash\n#SBATCH --x={{ no_such_variable }}\n")
    convert = doctor.check_template("badvar")[1]
    assert (
        convert.status == FAIL
        and "'no_such_variable' is undefined" in convert.detail
        and "valid variables" in convert.detail
    )
    write_template(tmp_path, "noservice", "#!/bin/bash\nexec {{ command }}\n", service=False)
    assert doctor.check_template("noservice")[0].status == WARN
    assert doctor.check_template("noservice", llm=True)[0].status == FAIL
    [unknown] = doctor.check_template("nope")
    assert unknown.status == FAIL and "available templates" in unknown.detail


def test_template_check_follows_the_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCMARKER_TEMPLATE_PATH", str(tmp_path))
    write_template(tmp_path, "badsyntax", "#!/bin/bash\nif then fi {{ command }}\n")
    site = tmp_path / "site.toml"
    site.write_text('[profiles.broken]\ntemplate = "badsyntax"\npartition = "debug"\n')
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(site))
    assert [c.name for c in doctor.check_template(profile="apptainer")][1] == "template apptainer: convert"
    broken = doctor.check_template(profile="broken")
    assert broken[1].name == "template badsyntax: convert" and broken[1].status == FAIL
    assert [c.status for c in doctor.check_template("generic", "broken")] == [OK, OK, OK]  # --template wins
    contexts = doctor.sample_contexts("broken", partition="gpu")
    assert (
        contexts["convert"]["partition"] == "gpu"
        and doctor.sample_contexts("broken")["convert"]["partition"] == "debug"
    )
    [unknown] = doctor.check_template(profile="nope")
    assert (unknown.name, unknown.status) == ("profile nope", FAIL) and "profiles: " in unknown.detail


def test_marker_install_import_and_cache_with_fakes(monkeypatch):
    monkeypatch.setattr(marker_engine, "marker_version", lambda: None)
    missing = checks.check_marker_install()
    assert missing.status == FAIL and missing.fix == 'pip install "hpc-marker[marker]"'
    monkeypatch.setattr(marker_engine, "marker_version", lambda: "1.9.1")
    old = checks.check_marker_install()
    assert old.status == FAIL and "1.9.1 is not a supported version (1.10.x, 2.0.x)" in old.detail
    monkeypatch.setattr(marker_engine, "marker_version", lambda: "2.0.0")
    assert checks.check_marker_install().status == OK

    def broken(name):
        raise RuntimeError("operator torchvision::nms does not exist\nmore")

    monkeypatch.setattr(checks, "_import", broken)
    imported = checks.check_marker_import()
    assert imported.status == FAIL and imported.detail == (
        "import marker.models: RuntimeError: operator torchvision::nms does not exist"
    )

    pieces = ["font /x/f.ttf", "model s3://layout/1 (/m)"]
    monkeypatch.setattr(marker_engine, "missing_cache_pieces", lambda **_: pieces)
    cache = checks.check_marker_cache()
    assert cache.status == FAIL and "font /x/f.ttf" in cache.detail and "hpcmarker prefetch --marker" in cache.fix
    node = ["llama-server binary (llamacpp backend; or set SURYA_INFERENCE_URL)"]
    monkeypatch.setattr(marker_engine, "missing_cache_pieces", lambda **_: node)
    assert checks.check_marker_cache().fix == node[0]  # prefetch cannot help there
    monkeypatch.setattr(marker_engine, "missing_cache_pieces", lambda **_: [])
    assert checks.check_marker_cache().status == OK


@pytest.mark.marker
def test_marker_cache_real_marker_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FONT_PATH", str(tmp_path / "fonts" / "f.ttf"))  # read at first import, in a fresh process
    code = (
        "from hpc_marker.admin.checks import check_marker_cache as c, check_marker_install as i; import json; "
        "print(json.dumps([i().__dict__, c().__dict__]))"
    )
    env = {**os.environ, "MODEL_CACHE_DIR": str(tmp_path / "models"), "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    install, cache = json.loads(out.stdout.splitlines()[-1])
    assert install["status"] == OK
    assert cache["status"] == FAIL and f"font {tmp_path}/fonts/f.ttf" in cache["detail"]
    assert str(tmp_path / "models") in cache["detail"] or str(tmp_path / "hf") in cache["detail"]


def test_ollama_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", path_with_standin(str(tmp_path)))
    assert checks.check_ollama(True).status == OK
    monkeypatch.setenv("PATH", str(tmp_path))
    assert checks.check_ollama(False).status == WARN
    required = checks.check_ollama(True)
    assert required.status == FAIL and "not on PATH" in required.detail


def test_ollama_url_and_manifest_path(tmp_path):
    assert checks.ollama_url("0.0.0.0:11500") == "http://127.0.0.1:11500"
    assert checks.ollama_url("https://llm.example.org") == "https://llm.example.org:11434"
    assert checks.ollama_url("gpu01") == "http://gpu01:11434"
    assert checks.manifest_path(tmp_path, "qwen2.5:7b") == tmp_path / "manifests/registry.ollama.ai/library/qwen2.5/7b"
    assert checks.manifest_path(tmp_path, "me/m") == tmp_path / "manifests/registry.ollama.ai/me/m/latest"
    assert checks.manifest_path(tmp_path, "hf.co/org/m:q4") == tmp_path / "manifests/hf.co/org/m/q4"


def test_llm_model_on_server_or_in_models_dir(tmp_path):
    server = StandinOllama(tmp_path / "standin").start()
    try:
        seed_model(server.models, "tiny:1b")
        assert checks.check_llm_model("tiny:1b", host=server.url, models_dir=str(tmp_path / "empty")).status == OK
        absent = checks.check_llm_model("other:2b", host=server.url, models_dir=str(tmp_path / "empty"))
        assert absent.status == FAIL and f"not on the Ollama at {server.url}" in absent.detail
        assert "hpcmarker prefetch --llm other:2b" in absent.fix
    finally:
        server.stop()
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    nothing = checks.check_llm_model("tiny:1b", host=closed, models_dir=str(tmp_path / "models"))
    assert nothing.status == FAIL and "no Ollama answers" in nothing.detail and time.monotonic() - started < 5
    manifest = checks.manifest_path(tmp_path / "models", "tiny:1b")
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    found = checks.check_llm_model("tiny:1b", host=closed, models_dir=str(tmp_path / "models"))
    assert found.status == OK and "blobs not verified" in found.detail


def test_out_folder(tmp_path):
    assert checks.check_out(tmp_path).status == OK
    assert "can be created" in checks.check_out(tmp_path / "a" / "b").detail
    (tmp_path / "file").write_text("x")
    assert checks.check_out(tmp_path / "file" / "sub").status == FAIL
    low = checks.check_out(tmp_path, min_free_gb=1e9)
    assert low.status == WARN and "GB free" in low.detail


def test_threads():
    assert checks.check_threads({"OMP_NUM_THREADS": "4"}, 64).status == OK
    assert checks.check_threads({}, 64).status == WARN
    assert checks.check_threads({}, 8).status == OK


def test_a_check_that_raises_becomes_a_failure(monkeypatch):
    def boom():
        raise ValueError("surprise\nsecond line")

    [c] = checks.guard("x", boom)
    assert c == Check("x", FAIL, "the check itself failed: ValueError: surprise", "report this with the detail")


def test_cheap_checks_take_a_submit_request_and_skip_the_scheduler(tmp_path, monkeypatch):
    from hpc_marker.slurm import commands as slurm

    def no_scheduler():
        raise AssertionError("cheap checks must not ask Slurm")

    monkeypatch.setattr(slurm, "partitions", no_scheduler)
    monkeypatch.setattr(marker_engine, "marker_version", lambda: "1.10.2")
    request = SubmitRequest.with_defaults(pdfs=tmp_path, out=tmp_path / "out", gpus=2)
    started = time.monotonic()
    checks = doctor.cheap_checks(request)
    assert time.monotonic() - started < 5
    assert [c.name for c in checks] == [
        "template generic: service",
        "template generic: convert",
        "template generic: collect",
        "marker",
        f"out {tmp_path / 'out'}",
    ]
    assert not doctor.failed(checks)


def test_command_exit_code_and_json(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "run_checks", lambda req: [Check("a", OK, "fine"), Check("b", WARN, "hm", "do x")])
    ok = invoke("doctor", "--json")
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"] is True
    monkeypatch.setattr(doctor, "run_checks", lambda req: [Check("a", FAIL, "bad [marker]", "fix [it]")])
    bad = invoke("doctor")
    assert bad.exit_code == 1
    assert "bad [marker]" in bad.output and "fix [it]" in bad.output and "0 ok, 0 warnings, 1 failed" in bad.output


def test_command_checks_the_submit_profile_unless_told(tmp_path, monkeypatch):
    requests = []
    monkeypatch.setattr(doctor, "run_checks", lambda req: requests.append(req) or [Check("a", OK, "fine")])
    monkeypatch.delenv("HPCMARKER_SUBMIT_PROFILE", raising=False)
    site = tmp_path / "site.toml"
    site.write_text('[submit]\nprofile = "apptainer"\n')
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(site))
    assert invoke("doctor").exit_code == 0
    assert invoke("doctor", "--profile", "a100-account", "--template", "generic").exit_code == 0
    assert [(r.profile, r.template) for r in requests] == [("apptainer", None), ("a100-account", "generic")]


@pytest.mark.slurm
def test_whole_doctor_on_the_test_cluster(tmp_path):
    result = invoke("doctor", "--engine", "text", "--out", tmp_path, "--json")
    report = json.loads(result.output)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["slurm: sinfo"]["status"] == OK and by_name["slurm: sacct"]["status"] == OK
    assert by_name["template generic: convert"]["detail"].endswith("sbatch --test-only ok")
    assert result.exit_code == (1 if not report["ok"] else 0)
    assert report["ok"], [c for c in report["checks"] if c["status"] == FAIL]
    bad = doctor.run_checks(DoctorRequest(partition="nope", engine="text"))
    part = next(c for c in bad if c.name == "partition nope")
    assert part.status == FAIL and "gpu" in part.fix
    assert next(c for c in bad if c.name == "template generic: convert").status == FAIL  # sbatch refuses it too
    a100 = doctor.run_checks(DoctorRequest(profile="a100-account", engine="text"))  # the profile's partition
    assert next(c for c in a100 if c.name == "partition a100").status == FAIL
    assert "sbatch --test-only" in next(c for c in a100 if c.name == "template generic: convert").detail


def test_marker_2_inference_server_binary_is_checked_where_the_jobs_look(tmp_path, monkeypatch):
    """Issue 19: doctor said marker was ok where marker 2.x's default `vllm serve` could not start."""
    monkeypatch.setattr(marker_engine, "marker_version", lambda: "2.0.0")
    monkeypatch.delenv("SURYA_INFERENCE_URL", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    [missing] = checks.check_marker_server("generic")
    assert missing.status == FAIL and missing.detail.startswith("vllm is not on PATH")
    assert "vllm==0.20.1" in missing.fix and "--inference-server apptainer" in missing.fix
    standin = Path(__file__).resolve().parents[1] / "standin"
    monkeypatch.setenv("PATH", f"{standin}:/usr/bin:/bin")
    [found] = checks.check_marker_server("generic")
    assert found.status == OK and found.detail.startswith("native")
    monkeypatch.setattr(marker_engine, "marker_version", lambda: "1.10.2")
    [old] = checks.check_marker_server("generic")
    assert old.status == OK and old.detail.startswith("none started")  # marker 1.x runs its models in the workers


@pytest.mark.marker
def test_marker_2_cache_check_with_the_tasks_own_server_names_no_llama_server(tmp_path, monkeypatch):
    from importlib import metadata

    if not metadata.version("marker-pdf").startswith("2."):
        pytest.skip("marker 1.x runs no inference server")
    code = (
        "from hpc_marker.admin.checks import check_marker_cache as c; import json; "
        "print(json.dumps(c(server=True).__dict__))"
    )
    env = {
        **os.environ,
        "MODEL_CACHE_DIR": str(tmp_path / "models"),
        "HF_HOME": str(tmp_path / "hf"),
        "FONT_PATH": str(tmp_path / "f.ttf"),
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    cache = json.loads(out.stdout.splitlines()[-1])
    assert cache["status"] == FAIL and "surya-ocr-2" in cache["detail"]
    assert "llama-server" not in cache["detail"] + cache["fix"] and "docker" not in cache["detail"]
    assert "hpcmarker prefetch --marker && source ~/.cache/hpcmarker/env.sh" in cache["fix"]
