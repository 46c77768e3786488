"""The collector stops the run's LLM service and withdraws each replica's endpoint and secret, also when the
service was killed before its own cleanup could remove them."""

from __future__ import annotations

from types import SimpleNamespace

from hpc_marker.llm.settings import LlmPaths, LlmRecord
from hpc_marker.manage import collect
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.util.errors import Refused
from tests.runkit import bare_record


def _llm_run(tmp_path, monkeypatch, stop):
    paths = RunPaths(tmp_path / "run")
    replicas = LlmPaths(paths.root).all_replicas(2)
    replicas[0].create()
    for replica in replicas:  # what a service killed with SIGKILL leaves behind
        replica.secret.write_text("s3cret\n")
        replica.endpoint.write_text("{}\n")
    record = bare_record(
        llm=LlmRecord(model="m", replicas=2, gpus=1, parallel=1, wait_timeout_s=1, request_timeout_s=1, cpus=1)
    )
    monkeypatch.setattr(collect, "executor_for", lambda name: SimpleNamespace(stop_service=stop))
    return paths, record, replicas


def test_every_replicas_secret_and_endpoint_are_withdrawn_once_the_service_is_stopped(tmp_path, monkeypatch):
    paths, record, replicas = _llm_run(tmp_path, monkeypatch, stop=lambda record: ["11", "12"])
    assert collect.stop_service(paths, record) == ["11", "12"]
    assert [p for r in replicas for p in (r.secret, r.endpoint) if p.exists()] == []
    assert replicas[0].root.is_dir()  # the rest of RUN/llm stays


def test_a_service_that_could_not_be_stopped_keeps_its_endpoint(tmp_path, monkeypatch):
    def refused(record):
        raise Refused("sacct: connection refused")

    paths, record, replicas = _llm_run(tmp_path, monkeypatch, stop=refused)
    assert collect.stop_service(paths, record) == []
    assert all(r.secret.exists() and r.endpoint.exists() for r in replicas)  # it may still be serving


def test_a_run_without_a_service_job_touches_nothing(tmp_path, monkeypatch):
    paths, record, replicas = _llm_run(tmp_path, monkeypatch, stop=lambda record: [])
    assert collect.stop_service(paths, record) == []
    assert all(r.secret.exists() for r in replicas)
