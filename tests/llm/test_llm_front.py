"""The authenticating front: secret and allowlist (refused requests never reach Ollama), streaming,
timeouts, failures and tokens counted per task, stats and metrics, nothing logs the secret; many
clients waiting at its gate in its event loop (not a thread each), large bodies."""

from __future__ import annotations

import ast
import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import aiohttp
import httpx
import ollama
import pytest
from standin.harness import StandinOllama, free_port, seed_model

from hpc_marker.llm.front import Front
from hpc_marker.llm.rules import authorize

SECRET = "s3cr3t-Token_abcdefghijklmnopqrstuvwxyz012345"


class _Logged:
    """The front's log lines so far (read when iterated: a live view of log_lines)."""

    def __init__(self, read) -> None:
        self.read = read

    def __iter__(self):
        return iter(self.read())

    def __bool__(self) -> bool:
        return bool(self.read())


@pytest.fixture
def stack(tmp_path, log_lines):
    """Start a stand-in ollama (with knobs) and a front before it; both stopped after the test."""
    started = []

    def start(front_timeout_s: float = 30.0, metrics_interval_s: float = 5.0, capacity: int | None = None, **knobs):
        standin = StandinOllama(tmp_path / f"s{len(started)}", **knobs).start()
        seed_model(standin.models, "tiny:1b")
        front = Front(
            standin.url,
            SECRET,
            host="127.0.0.1",
            port=0,
            timeout_s=front_timeout_s,
            metrics_path=tmp_path / "metrics.jsonl",
            metrics_interval_s=metrics_interval_s,
            capacity=capacity,
        ).start()
        started.append((standin, front))
        return standin, front, _Logged(log_lines)

    yield start
    for standin, front in started:
        front.stop()
        standin.stop()


def test_authorize_decisions_are_pure_and_strict():
    ok = authorize("POST", f"/{SECRET}/api/generate", SECRET)
    assert (ok.action, ok.task, ok.upstream_path) == ("forward", "-", "/api/generate")
    task = authorize("POST", f"/{SECRET}/task/12/api/chat?x=1", SECRET)
    assert (task.action, task.task, task.upstream_path) == ("forward", "12", "/api/chat")
    assert authorize("GET", f"/{SECRET}/_hpcmarker/stats", SECRET).action == "stats"
    assert authorize("GET", f"/{SECRET}/v1/models", SECRET).action == "forward"
    for path in (
        "/api/generate",
        f"/{SECRET[:-1]}/api/generate",
        f"/{SECRET}x/api/generate",
        f"{SECRET}/api/tags",
        "//api/generate",
        f"/{SECRET.upper()}/api/generate",
        "/",
        "",
    ):
        assert authorize("POST", path, SECRET).status == 403, path
    assert authorize("POST", f"/{SECRET}/api/generate", "").status == 403  # no secret configured: nothing passes
    for path in (
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/copy",
        "/api/delete",
        "/api/blobs/sha256:00",
        "/api/ps",
        "/",
        "/api/generate/../pull",
        "/api/%70ull",
        "/task/1/../api/pull",
        "/task//api/tags",
    ):
        assert authorize("POST", f"/{SECRET}{path}", SECRET).status == 403, path
    assert authorize("GET", f"/{SECRET}/api/generate", SECRET).status == 405


def test_missing_or_wrong_secret_is_refused_and_never_reaches_ollama(stack):
    standin, front, logs = stack()
    wrong = [
        "/api/generate",
        "/nope/api/generate",
        f"/{SECRET[:-1]}/api/generate",
        f"/{SECRET}X/api/generate",
        "/_hpcmarker/stats",
        f"/x/{SECRET}/api/generate",
    ]
    for path in wrong:
        resp = httpx.post(front.url + path, json={"model": "tiny:1b", "prompt": "hi", "stream": False})
        assert resp.status_code == 403, path
        assert resp.json() == {"error": "forbidden"}
    assert standin.requests() == []  # the stand-in never saw one of them
    assert httpx.get(f"{front.url}/{SECRET}/api/version").json() == {"version": "0.0.0-standin"}
    assert standin.requests() == ["GET /api/version"]  # forwarded without the secret
    assert front.stats()["denied"] == len(wrong)
    assert not any(SECRET in line for line in logs)


def test_model_management_is_refused_at_the_front(stack):
    standin, front, _ = stack()
    before = sorted(p.name for p in standin.models.iterdir())
    calls = [
        ("POST", "/api/pull", {"model": "evil"}),
        ("POST", "/api/push", {"model": "tiny:1b"}),
        ("POST", "/api/create", {"model": "x", "from": "tiny:1b"}),
        ("POST", "/api/copy", {}),
        ("DELETE", "/api/delete", {"model": "tiny:1b"}),
        ("POST", "/api/blobs/sha256:" + "0" * 64, {}),
        ("POST", "/api/generate/../pull", {"model": "evil"}),
        ("POST", "/api/%70ull", {"model": "evil"}),
    ]
    for method, path, body in calls:
        for prefix in (f"/{SECRET}", f"/{SECRET}/task/3"):
            resp = httpx.request(method, front.url + prefix + path, json=body)
            assert resp.status_code == 403, (method, path)
            assert "not served by this endpoint" in resp.json()["error"]
    assert standin.requests() == []
    assert sorted(p.name for p in standin.models.iterdir()) == before


def test_generate_and_chat_go_through_with_tokens_counted_per_task(stack):
    standin, front, _ = stack()
    client = ollama.Client(host=f"{front.url}/{SECRET}/task/3")
    answer = client.generate(model="tiny:1b", prompt="one two three four", stream=False)
    assert answer.response == "ONE TWO THREE FOUR"
    parts = list(client.chat(model="tiny:1b", messages=[{"role": "user", "content": "a b c"}], stream=True))
    assert "".join(p.message.content for p in parts) == "A B C"
    ollama.Client(host=f"{front.url}/{SECRET}").generate(model="tiny:1b", prompt="x y", stream=False)
    tasks = front.stats()["tasks"]
    assert tasks["3"]["requests"] == 2 and tasks["3"]["failures"] == 0
    assert (tasks["3"]["tokens_in"], tasks["3"]["tokens_out"]) == (4 + 3, 4 + 3)
    assert (tasks["-"]["requests"], tasks["-"]["tokens_out"]) == (1, 2)
    assert standin.requests() == ["POST /api/generate", "POST /api/chat", "POST /api/generate"]


def test_streaming_passes_through_chunk_by_chunk(stack):
    _, front, _ = stack(delay_per_token_s=0.05)
    prompt = " ".join(f"w{i}" for i in range(20))
    started = time.monotonic()
    arrivals = []
    with httpx.stream(
        "POST",
        f"{front.url}/{SECRET}/task/1/api/generate",
        timeout=30,
        json={"model": "tiny:1b", "prompt": prompt, "stream": True},
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line:
                arrivals.append((time.monotonic() - started, json.loads(line)))
    assert len(arrivals) == 21 and arrivals[-1][1]["done"] is True
    total = arrivals[-1][0]
    assert total >= 0.9  # 20 tokens x 0.05 s
    # the lines arrive spread over the generation (buffered, they would come together at the end); the spread, not
    # the first line's time, which a loaded machine (CI) delays by the connection and the front's start
    assert total - arrivals[0][0] >= 0.5, "the first token must arrive long before the last: not buffered"
    assert front.stats()["tasks"]["1"]["tokens_out"] == 20


def test_timeout_answers_504_and_is_counted(stack):
    _, front, logs = stack(front_timeout_s=0.5, delay_per_token_s=0.2, num_parallel=4)
    started = time.monotonic()
    resp = httpx.post(
        f"{front.url}/{SECRET}/task/7/api/generate",
        timeout=30,
        json={"model": "tiny:1b", "prompt": "a b c d e f g h i j", "stream": False},
    )
    assert resp.status_code == 504 and "0.5s" in resp.json()["error"]
    assert time.monotonic() - started < 1.5
    with (
        pytest.raises(httpx.HTTPError),  # a stream past its deadline is cut
        httpx.stream(
            "POST",
            f"{front.url}/{SECRET}/task/7/api/generate",
            timeout=30,
            json={"model": "tiny:1b", "prompt": "a b c d e f g h i j", "stream": True},
        ) as stream,
    ):
        assert stream.status_code == 200
        for _ in stream.iter_lines():
            pass
    counters = front.stats()["tasks"]["7"]
    assert counters["timeouts"] == 2 and counters["requests"] == 2 and counters["in_flight"] == 0
    assert any("timeout" in line for line in logs)


def test_busy_503_from_ollama_is_a_failure_of_that_task(stack):
    _, front, _ = stack(num_parallel=1, max_queue=0, delay_per_token_s=0.1)
    statuses: list[int] = []

    def call() -> None:
        resp = httpx.post(
            f"{front.url}/{SECRET}/task/2/api/generate",
            timeout=30,
            json={"model": "tiny:1b", "prompt": "a b c d e", "stream": False},
        )
        statuses.append(resp.status_code)
        if resp.status_code == 503:
            assert "server busy" in resp.json()["error"]

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    busy = statuses.count(503)
    assert busy >= 1 and statuses.count(200) >= 1
    counters = front.stats()["tasks"]["2"]
    assert counters["failures"] == busy and counters["requests"] == 4


def test_injected_500_and_unreachable_ollama_are_failures(stack, tmp_path):
    _, front, _ = stack(fail_every=2)
    client = ollama.Client(host=f"{front.url}/{SECRET}/task/5")
    client.generate(model="tiny:1b", prompt="a", stream=False)
    with pytest.raises(ollama.ResponseError) as failed:
        client.generate(model="tiny:1b", prompt="b", stream=False)
    assert failed.value.status_code == 500
    assert front.stats()["tasks"]["5"]["failures"] == 1
    with Front(f"http://127.0.0.1:{free_port()}", SECRET, timeout_s=5) as dead:
        resp = httpx.post(f"{dead.url}/{SECRET}/task/0/api/generate", json={"model": "m", "prompt": "p"})
        assert resp.status_code == 502
        assert dead.stats()["tasks"]["0"]["failures"] == 1


def test_stats_endpoint_and_metrics_file_never_hold_the_secret(stack, tmp_path):
    _, front, logs = stack(metrics_interval_s=0.1)
    assert httpx.get(f"{front.url}/_hpcmarker/stats").status_code == 403
    httpx.post(
        f"{front.url}/{SECRET}/task/4/api/generate", json={"model": "tiny:1b", "prompt": "a b c", "stream": False}
    )
    httpx.post(f"{front.url}/{SECRET}/api/pull", json={"model": "x"})
    stats = httpx.get(f"{front.url}/{SECRET}/task/4/_hpcmarker/stats").json()
    assert stats["tasks"]["4"]["tokens_out"] == 3 and stats["denied"] == 2 and stats["in_flight"] == 0
    time.sleep(0.35)
    front.stop()
    text = (tmp_path / "metrics.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) >= 2
    assert {"ts", "interval_s", "in_flight", "tasks", "tokens_out_per_s", "tokens_in_per_s"} <= set(lines[-1])
    assert lines[-1]["tasks"]["4"]["tokens_out"] == 3
    assert any(line["tokens_out_per_s"] > 0 for line in lines)
    assert SECRET not in text
    assert logs and not any(SECRET in line for line in logs)


def test_the_package_serves_no_http_with_http_server():
    """Python documents http.server as not for production; the front was its last user in the package."""
    package = Path(__file__).resolve().parents[2] / "hpc_marker"
    users = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            if any(name == "http.server" or name.startswith("http.server.") for name in names):
                users.append(str(path.relative_to(package)))
    assert users == []


def test_clients_wait_at_the_gate_in_the_event_loop_and_those_who_leave_never_reach_the_server(stack):
    """110 clients, 2 slots: the front holds the others without a thread each (http.server had one per
    connection); 10 clients that give up while queued are dropped, counted as abandoned, never sent."""
    standin, front, _ = stack(capacity=2, delay_per_token_s=0.04, num_parallel=2)
    url = f"{front.url}/{SECRET}/task/8/api/generate"
    samples: list[tuple[int, int, int]] = []  # (queued, in flight at the server, threads in this process)

    async def call(session: aiohttp.ClientSession, timeout_s: float) -> object:
        try:
            async with session.post(
                url,
                json={"model": "tiny:1b", "prompt": "x", "stream": False},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                return resp.status, (await resp.json())["response"]
        except asyncio.TimeoutError:
            return "gave up"

    async def clients() -> list[object]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            calls = [asyncio.create_task(call(session, 60)) for _ in range(100)]
            deadline = time.monotonic() + 30
            while front.stats()["queued"] < 90:
                assert time.monotonic() < deadline, front.stats()
                await asyncio.sleep(0.02)
            calls += [asyncio.create_task(call(session, 0.5)) for _ in range(10)]  # last in the queue
            while not all(c.done() for c in calls):
                stats = front.stats()
                samples.append((stats["queued"], stats["in_flight"], threading.active_count()))
                await asyncio.sleep(0.05)
            return [c.result() for c in calls]

    results = asyncio.run(clients())
    assert results[:100] == [(200, "X")] * 100 and results[100:] == ["gave up"] * 10
    busy = [s for s in samples if s[0] >= 50]
    assert busy and max(s[1] for s in samples) <= 2
    assert max(s[2] for s in busy) < 40, busy  # not a thread per waiting client
    counters = front.stats()["tasks"]["8"]
    assert (counters["requests"], counters["abandoned"], counters["failures"]) == (110, 10, 0)
    assert (counters["queued"], counters["in_flight"]) == (0, 0)
    assert len(standin.requests()) == 100  # the ten who left never reached it


def test_a_large_body_goes_through_whole(stack):
    """marker sends page images inline: a 3 MB body is forwarded as it came (aiohttp's own limit is 1 MB)."""
    _, front, _ = stack()
    image = "QUFB" * (3 << 18)  # 3 MB of base64
    resp = httpx.post(
        f"{front.url}/{SECRET}/task/2/api/generate",
        timeout=30,
        json={"model": "tiny:1b", "prompt": "see the page", "images": [image], "stream": False},
    )
    assert resp.status_code == 200 and resp.json()["response"] == "SEE THE PAGE"
    assert front.stats()["tasks"]["2"]["tokens_in"] == 3
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:  # announces too much, sends nothing
        sock.sendall(
            f"POST /{SECRET}/task/2/api/generate HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {(256 << 20) + 1}\r\n\r\n".encode()
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 413 ")
    body = json.dumps({"model": "tiny:1b", "prompt": "go on", "stream": False}).encode()
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:  # curl asks before a large body
        sock.sendall(
            f"POST /{SECRET}/task/2/api/generate HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_stop_cuts_the_requests_in_flight_at_once(stack):
    """A stopping service cuts its requests in flight (a task's relay sends them to another replica) instead of
    finishing them first: the Slurm failover test kills a replica under its requests."""
    _, front, logs = stack(delay_per_token_s=1.0)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(
                httpx.post(
                    f"{front.url}/{SECRET}/task/1/api/generate",
                    timeout=30,
                    json={"model": "tiny:1b", "prompt": "a b c", "stream": False},
                ).status_code
            )
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while front.stats()["in_flight"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    front.stop()
    assert time.monotonic() - started < 1.0
    thread.join(timeout=10)
    assert outcome == ["RemoteProtocolError"]  # the 3 s answer never came
    assert front.stats()["tasks"]["1"]["in_flight"] == 0
    assert any("cut: the front stopped" in line for line in logs)
