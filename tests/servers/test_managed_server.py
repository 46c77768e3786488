"""ManagedServer (hpc_marker/servers/) against small real processes: Python's http.server on a free
loopback port, and short `python -c` scripts that crash, never answer, answer 503 or ignore SIGTERM.
Also poll_until, the bounded wait every "until it answers" loop uses."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from hpc_marker.servers.health import NotReady, WaitTimeout, http_ok, poll_until
from hpc_marker.servers.managed import ManagedServer, ServerFailed, free_port, log_tail
from hpc_marker.util.processes import group_members, process_alive

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
SLEEP = [PY, "-c", "import time; time.sleep(600)"]
ANSWER_503 = textwrap.dedent("""
    import http.server, sys
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")
# The leader exits on SIGTERM (or ignores it: "both"); its child, in the same process group, ignores
# SIGTERM and says so in the log once it does.
STUBBORN = textwrap.dedent("""
    import signal, subprocess, sys, time
    if sys.argv[1] == "both":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "print('CHILD-PID', os.getpid(), flush=True); time.sleep(600)"])
    time.sleep(600)
""")


class Failed(ServerFailed):
    """The error class a user of ManagedServer chooses."""


class Stopped(BaseException):
    """Like the task's TaskStopped on SIGTERM: a BaseException raised inside the block."""


def http_server(tmp_path: Path, **kw) -> ManagedServer:
    port = free_port()
    return ManagedServer(
        [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        tmp_path / "logs" / "server.log",
        name="test server",
        health_url=f"http://127.0.0.1:{port}/",
        **kw,
    )


def child_pid(server: ManagedServer, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in server.log_path.read_text().splitlines():
            if line.startswith("CHILD-PID "):
                return int(line.split()[1])
        time.sleep(0.05)
    raise AssertionError(f"no child pid in {server.log_path}: {server.log_path.read_text()}")


def test_starts_in_its_own_group_waits_until_healthy_and_stops_by_sigterm(tmp_path):
    server = http_server(tmp_path).start()
    try:
        pid = server.pid
        assert os.getpgid(pid) == pid != os.getpgid(0)  # its own process group, led by the server
        reply = server.wait_until_healthy(30)
        assert reply.status_code == 200 and server.alive()
        assert httpx.get(server.health_url, trust_env=False).status_code == 200
    finally:
        how = server.stop(grace_s=5)
    assert how.startswith("stopped by SIGTERM in ") and how.endswith("s"), how
    assert not process_alive(pid) and group_members(pid) == []
    assert server.returncode is not None and server.stop() == how  # stopping again changes nothing
    first = server.log_path.read_text().splitlines()[0]
    assert first == f"### hpcmarker: {shlex.join(server.argv)}"
    assert server.label == f"test server ({Path(PY).name} pid {pid})"


def test_env_and_log_output(tmp_path):
    code = "import os, sys; print('out', os.environ['HPCMARKER_TEST_VALUE']); print('err line', file=sys.stderr)"
    env = {"PATH": os.environ["PATH"], "HPCMARKER_TEST_VALUE": "from-the-env"}
    server = ManagedServer([PY, "-c", code], tmp_path / "s.log", env=env).start()
    server.proc.wait(timeout=30)
    assert server.returncode == 0 and not server.alive()
    lines = server.log_path.read_text().splitlines()
    assert sorted(lines[1:]) == ["err line", "out from-the-env"]  # stdout and stderr both
    assert re.fullmatch(r"had already exited in \d+\.\ds", server.stop())


def test_a_process_that_exits_fails_at_once_with_its_code_and_log_tail(tmp_path):
    code = "import sys; print('loading', flush=True); sys.exit('ValueError: no memory for the cache blocks')"
    server = ManagedServer(
        [PY, "-c", code],
        tmp_path / "s.log",
        name="crasher",
        error=Failed,
        health_url=f"http://127.0.0.1:{free_port()}/health",
    )
    started = time.monotonic()
    with pytest.raises(Failed) as info, server:
        server.wait_until_healthy(60)
    assert time.monotonic() - started < 10  # not the 60 s timeout
    message = str(info.value)
    assert message.startswith(
        f"crasher ({Path(PY).name} pid {server.pid}) exited with code 1 before answering "
        f"{server.health_url}; last lines of {server.log_path}: "
    )
    assert message.endswith("loading | ValueError: no memory for the cache blocks") and "\n" not in message


def test_no_answer_fails_at_the_timeout_naming_url_last_problem_and_log(tmp_path):
    server = ManagedServer(
        SLEEP, tmp_path / "s.log", health_url=f"http://127.0.0.1:{free_port()}/health", tail_lines=1, error=Failed
    )
    started = time.monotonic()
    expected = (
        r"^server \(python[\d.]* pid \d+\) did not answer on http://127\.0\.0\.1:\d+/health within 1s "
        r"\(ConnectError\); last lines of .*s\.log: ### hpcmarker: .*sleep\(600\)'$"
    )
    with pytest.raises(Failed, match=expected), server:
        server.wait_until_healthy(1)
    assert 1 <= time.monotonic() - started < 8
    assert not process_alive(server.pid)  # leaving the block stopped it


def test_an_http_error_status_is_the_last_problem(tmp_path):
    port = free_port()
    with ManagedServer(
        [PY, "-c", ANSWER_503, str(port)],
        tmp_path / "s.log",
        error=Failed,
        health_url=f"http://127.0.0.1:{port}/health",
    ) as server:
        with pytest.raises(Failed, match=r"within 1.5s \(HTTP 503\)"):
            server.wait_until_healthy(1.5, interval_s=0.1)
        assert server.alive()  # a timeout does not stop it: its owner does


def test_a_custom_check_returns_its_value(tmp_path):
    ready = tmp_path / "ready"
    code = f"import time, pathlib; time.sleep(0.5); pathlib.Path({str(ready)!r}).write_text('v1'); time.sleep(600)"
    seen: list[str] = []

    def check(seconds_left: float) -> str | NotReady:
        seen.append(f"{seconds_left:.0f}")
        return ready.read_text() if ready.exists() else NotReady("no ready file yet")

    with ManagedServer([PY, "-c", code], tmp_path / "s.log") as server:
        assert server.wait_until_healthy(20, check, interval_s=0.05) == "v1"
    assert len(seen) > 1 and seen[0] == "20"
    with pytest.raises(ValueError, match="no health_url and no check"):
        ManagedServer(SLEEP, tmp_path / "t.log").wait_until_healthy(1)


@pytest.fixture
def kill_after():
    """Servers a test starts: SIGKILLed, whole group, should the test fail before it stopped them."""
    servers: list[ManagedServer] = []
    yield servers.append
    for server in servers:
        if server.pid is not None and group_members(server.pid):
            os.killpg(server.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)


def test_ignoring_sigterm_is_killed_after_the_grace_whole_group(tmp_path, kill_after):
    server = ManagedServer([PY, "-c", STUBBORN, "both"], tmp_path / "s.log").start()
    kill_after(server)
    child = child_pid(server)
    assert os.getpgid(child) == server.pid
    started = time.monotonic()
    how = server.stop(grace_s=0.5)
    assert how.startswith("killed (SIGKILL) after 0.5s in ") and "still running" not in how, how
    assert 0.5 <= time.monotonic() - started < 8
    assert not process_alive(server.pid) and not process_alive(child) and group_members(server.pid) == []
    assert server.returncode == -signal.SIGKILL


def test_a_child_left_behind_by_the_leader_is_killed(tmp_path, kill_after):
    server = ManagedServer([PY, "-c", STUBBORN, "leader-obeys"], tmp_path / "s.log").start()
    kill_after(server)
    child = child_pid(server)
    how = server.stop(grace_s=0.5)
    assert how.startswith("killed (SIGKILL) after 0.5s"), how  # the leader went; its group did not
    assert server.returncode == -signal.SIGTERM and not process_alive(child)


def test_an_exception_in_the_block_stops_the_server_and_propagates(tmp_path):
    server = http_server(tmp_path, stop_grace_s=5)
    with pytest.raises(Stopped), server:
        server.wait_until_healthy(30)
        raise Stopped("SIGTERM")
    assert server.stopped.startswith("stopped by SIGTERM") and not process_alive(server.pid)
    with pytest.raises(RuntimeError, match="already started"):
        server.start()


def test_ensure_running_names_when(tmp_path):
    server = ManagedServer([PY, "-c", "import sys; sys.exit(7)"], tmp_path / "s.log", name="svc").start()
    server.proc.wait(timeout=30)
    with pytest.raises(ServerFailed, match=r"^svc \(.* pid \d+\) exited with code 7 while serving; last lines of "):
        server.ensure_running("while serving")


PARENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hpc_marker.servers.managed import ManagedServer
    server = ManagedServer([sys.executable, "-c", "import time; time.sleep(600)"], Path(sys.argv[1])).start()
    print(server.pid, flush=True)
    time.sleep(600)
""")


def test_the_server_dies_when_its_parent_is_sigkilled(tmp_path):
    parent = subprocess.Popen(
        [PY, "-c", PARENT, str(tmp_path / "s.log")],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    pid = None
    try:
        pid = int(parent.stdout.readline())
        assert process_alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(pid)  # PR_SET_PDEATHSIG: SIGTERM when the parent died
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid is not None and process_alive(pid):
            os.kill(pid, signal.SIGKILL)


# --- poll_until, http_ok, log_tail ------------------------------------------------------------


def test_poll_until_returns_the_first_result_and_is_bounded():
    answers = iter([NotReady("a"), NotReady("b"), "done"])
    assert poll_until(lambda left: next(answers), 10, interval_s=0.01) == "done"
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        poll_until(lambda left: NotReady(f"still {left > 0}"), 0.3, interval_s=0.05)
    assert 0.3 <= time.monotonic() - started < 2
    assert info.value.last == "still False" and info.value.timeout_s == 0.3  # the last probe saw no time left
    calls = []
    with pytest.raises(WaitTimeout):
        poll_until(lambda left: calls.append(left) or NotReady("x"), 0)
    assert calls == [0.0]  # called once even without time


def test_poll_until_lets_a_probes_error_through_at_once():
    def probe(left: float):
        raise ZeroDivisionError("a bug keeps its traceback")

    with pytest.raises(ZeroDivisionError, match="a bug keeps its traceback"):
        poll_until(probe, 60)


def test_http_ok_reports_refused_connections():
    answer = http_ok(f"http://127.0.0.1:{free_port()}/", 1.0)
    assert answer == NotReady("ConnectError")


def test_log_tail(tmp_path):
    log = tmp_path / "x.log"
    assert log_tail(log) == "(no log)"
    log.write_text("")
    assert log_tail(log) == "(log is empty)"
    log.write_text("one\n\n  \ntwo\nthree\n")
    assert log_tail(log, 2) == "two | three" and log_tail(log) == "one | two | three"
