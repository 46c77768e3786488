"""Task side: wait_for_service gives up clearly and in time; Endpoint hides its secret; refine_pages
refines, bounds its concurrency, and degrades (keeps the text, says why) when the LLM fails."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from standin.harness import StandinOllama, free_port, seed_model

from hpc_marker.llm.client import Endpoint, ServiceUnavailable, ollama_client, wait_for_service
from hpc_marker.llm.front import Front
from hpc_marker.llm.refine import refine_pages
from hpc_marker.llm.settings import LlmPaths, write_private

SECRET = "client-test-secret-0123456789abcdefghijklmnop"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def endpoint_for(tmp_path):
    """An Endpoint to a front before a stand-in ollama with the given knobs."""
    started = []

    def start(front_timeout_s: float = 30.0, **knobs) -> tuple[Endpoint, Front]:
        standin = StandinOllama(tmp_path / f"s{len(started)}", **knobs).start()
        seed_model(standin.models, "tiny:1b")
        front = Front(standin.url, SECRET, timeout_s=front_timeout_s).start()
        started.append((standin, front))
        return Endpoint(url=front.url, model="tiny:1b", secret=SECRET), front

    yield start
    for standin, front in started:
        front.stop()
        standin.stop()


def test_wait_for_service_times_out_clearly_when_nothing_comes_up(tmp_path):
    run_dir = tmp_path / "20260101-000000-abcd"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"jobs": {"service": ["4242"]}}))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as error:
        wait_for_service(run_dir, timeout_s=0.5, poll_s=0.1)
    assert time.monotonic() - started < 2
    message = str(error.value)
    assert "LLM service of run 20260101-000000-abcd (service job 4242) is not up after 0.5s" in message
    assert "no llm/endpoint.json yet" in message and "\n" not in message


def test_wait_for_service_does_not_trust_a_stale_endpoint(tmp_path):
    paths = LlmPaths(tmp_path)
    paths.create()
    write_private(paths.endpoint, json.dumps({"url": f"http://127.0.0.1:{free_port()}", "model": "m", "started": 0}))
    write_private(paths.secret, "stale-secret\n")
    with pytest.raises(ServiceUnavailable, match=r"http://127\.0\.0\.1:\d+ does not answer") as error:
        wait_for_service(tmp_path, timeout_s=0.5, poll_s=0.1)
    assert "stale-secret" not in str(error.value)


def test_wait_for_service_rejects_a_wrong_secret(tmp_path, endpoint_for):
    endpoint, _ = endpoint_for()
    paths = LlmPaths(tmp_path / "run")
    paths.create()
    write_private(paths.endpoint, json.dumps({"url": endpoint.url, "model": "tiny:1b", "started": 1.0}))
    write_private(paths.secret, "not-the-secret\n")
    with pytest.raises(ServiceUnavailable, match="answered HTTP 403"):
        wait_for_service(paths.run_dir, timeout_s=0.5, poll_s=0.1)
    write_private(paths.secret, SECRET + "\n")
    found = wait_for_service(paths.run_dir, timeout_s=5, poll_s=0.1)
    assert (found.url, found.model, found.secret, found.started) == (endpoint.url, "tiny:1b", SECRET, 1.0)


def test_endpoint_urls_and_repr():
    endpoint = Endpoint(url="http://10.0.0.5:41000", model="m", secret="abc123")
    assert endpoint.base_url() == "http://10.0.0.5:41000/abc123"
    assert endpoint.base_url(task=3) == "http://10.0.0.5:41000/abc123/task/3"
    assert "abc123" not in repr(endpoint)
    assert endpoint.redact("GET http://10.0.0.5:41000/abc123/api/tags") == "GET http://10.0.0.5:41000/<secret>/api/tags"


def test_refine_pages_refines_each_page_in_order(endpoint_for):
    endpoint, front = endpoint_for()
    pages = ["Intro-\nduction\n\nsome   text here\n", "", "second page\n"]
    results = refine_pages(pages, endpoint, task=6, concurrency=2, timeout_s=10)
    assert [r.text for r in results] == ["INTRO- DUCTION SOME TEXT HERE\n", "", "SECOND PAGE\n"]
    assert not any(r.degraded for r in results)
    assert results[0].tokens_out == 5 and results[1].tokens_out == 0  # an empty page is not sent
    assert front.stats()["tasks"]["6"]["requests"] == 2


def test_refine_pages_concurrency_is_bounded(endpoint_for):
    # two slots and no queue at the server: a third concurrent request would be answered 503
    endpoint, front = endpoint_for(num_parallel=2, max_queue=0, delay_per_token_s=0.05)
    pages = [f"page {i} has five words" for i in range(6)]
    results = refine_pages(pages, endpoint, task=1, concurrency=2, timeout_s=10)
    assert not any(r.degraded for r in results), [r.reason for r in results]
    assert front.stats()["tasks"]["1"]["failures"] == 0
    overloaded = refine_pages(pages, endpoint, task=2, concurrency=6, timeout_s=10)
    assert any(r.degraded and "server busy" in r.reason for r in overloaded)  # the bound is what prevents this


def test_refine_pages_degrades_when_the_llm_fails(endpoint_for):
    endpoint, front = endpoint_for(fail_every=1)
    pages = ["alpha beta\n", "gamma delta\n"]
    results = refine_pages(pages, endpoint, task=9, concurrency=2, timeout_s=10)
    assert [r.text for r in results] == pages  # extracted text kept
    assert all(r.degraded for r in results)
    assert all("HTTP 500" in r.reason and "kept the extracted text" in r.reason for r in results)
    assert not any(SECRET in r.reason for r in results)
    assert front.stats()["tasks"]["9"]["failures"] == 2


def test_refine_pages_degrades_on_timeout(endpoint_for):
    endpoint, _ = endpoint_for(delay_per_token_s=0.3, num_parallel=2)
    started = time.monotonic()
    results = refine_pages(["one two three four five six\n"], endpoint, timeout_s=0.5)
    assert time.monotonic() - started < 3
    assert results[0].degraded and "timed out after 0.5s" in results[0].reason
    assert results[0].text == "one two three four five six\n"


def test_refine_pages_degrades_when_nothing_answers():
    endpoint = Endpoint(url=f"http://127.0.0.1:{free_port()}", model="m", secret=SECRET)
    results = refine_pages(["some text\n"], endpoint, timeout_s=2)
    assert results[0].degraded and results[0].text == "some text\n" and SECRET not in results[0].reason


def test_every_ollama_client_is_built_by_ollama_client():
    builders = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "hpc_marker").rglob("*.py") if "ollama.Client(" in p.read_text()
    )
    assert builders == ["hpc_marker/llm/client.py"]


def test_ollama_client_gives_up_on_a_silent_server_and_ignores_proxies(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy would refuse: it must not be used
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        client = ollama_client(f"http://127.0.0.1:{silent.getsockname()[1]}", 0.5)
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.list()
        assert time.monotonic() - started < 5
        client.close()
