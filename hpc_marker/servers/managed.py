"""ManagedServer: one server process that hpcmarker starts, waits for and stops.

Owns the lifecycle every server shares, whatever it serves:
- start: the argv (a list, never a shell string) in its own process group (`start_new_session`),
  with `parent_death_signal()` so it gets SIGTERM when its parent dies, even by SIGKILL; stdin
  from /dev/null, stdout and stderr appended to a log whose first line is `### hpcmarker: <argv>`;
  the given environment (None: the parent's);
- `wait_until_healthy(timeout_s)`: polls the health check (by default a GET of `health_url` that
  answers 200), bounded by timeout_s, and checks the process before every poll: a process that
  exits fails at once with its exit code and the log's last lines; at the timeout the error names
  the URL, the last thing seen and the log's last lines. Errors are `self.error` (a ServerFailed
  subclass the user chooses), one line each;
- `stop(grace_s)`: SIGTERM to the whole group, SIGKILL to what is left after grace_s, the leader
  reaped; returns how it ended in one line ("stopped by SIGTERM in 0.3s").

    with ManagedServer([vllm, "serve", ...], log_path, env=env, name="inference server",
                       health_url=f"{url}/health").start() as server:
        server.wait_until_healthy(900)
        ...   # leaving the block stops the group, after stop_grace_s at most
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from hpc_marker.servers.health import WaitTimeout, http_ok, poll_until
from hpc_marker.util.processes import group_members, parent_death_signal

S = TypeVar("S", bound="ManagedServer")
HOST = "127.0.0.1"
REAP_S = 10.0  # after SIGKILL: how long to wait for the group to be gone


class ServerFailed(RuntimeError):
    """A server is missing, exited, or did not answer in time; the message is one line."""


def free_port(host: str = HOST) -> int:
    """A TCP port free on `host` now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 8) -> str:
    """The last `lines` non-blank lines of a log, joined by " | " (one line for an error message)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(log is empty)"


@dataclass
class ManagedServer:
    """A server process: argv, environment, log, health URL (or check), stop. See the module's docstring."""

    argv: list[str]
    log_path: Path
    env: Mapping[str, str] | None = field(default=None, repr=False)  # None: this process's environment
    name: str = "server"  # what messages call it: "<name> (<argv[0]'s name> pid N) ..."
    health_url: str | None = None
    tail_lines: int = 20  # log lines quoted in errors
    error: type[ServerFailed] = ServerFailed
    stop_grace_s: float = 10.0  # for leaving the `with` block
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    stopped: str | None = field(default=None, init=False)  # stop()'s answer, once stopped

    def __post_init__(self) -> None:
        self.log_path = Path(self.log_path)

    def start(self: S) -> S:
        """Start the process (once); returns self, so `with server.start():` reads naturally."""
        if self.proc is not None:
            raise RuntimeError(f"{self.label} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"### hpcmarker: {shlex.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else dict(self.env),
                close_fds=True,
                start_new_session=True,
                preexec_fn=parent_death_signal(),
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def process_name(self) -> str:
        """The executable's name and the process id: "vllm pid 4242"."""
        return f"{Path(self.argv[0]).name} pid {self.pid if self.pid is not None else '?'}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.process_name})"

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_lines(self) -> str:
        """The log's last `tail_lines` lines, as errors quote them."""
        return log_tail(self.log_path, self.tail_lines)

    def ensure_running(self, when: str) -> None:
        """Raise self.error (exit code, the log's last lines) unless the process is running."""
        if self.proc is None:
            raise RuntimeError(f"{self.label} was never started")
        code = self.proc.poll()
        if code is not None:
            raise self.error(
                f"{self.label} exited with code {code} {when}; last lines of {self.log_path}: {self.last_lines()}"
            )

    def wait_until_healthy(
        self, timeout_s: float, check: Callable[[float], Any] | None = None, *, interval_s: float = 0.5
    ) -> Any:
        """Poll `check(seconds_left)` (default: GET health_url answers 200; it returns the result or
        NotReady) until it passes, at most timeout_s, the process checked before every poll. Returns
        what the check returned (the default: the 200 reply)."""
        where = self.health_url or "its health check"
        if check is None:
            if self.health_url is None:
                raise ValueError(f"{self.name}: no health_url and no check to wait for")
            check = partial(http_ok, self.health_url)

        def probe(left: float) -> Any:
            self.ensure_running(f"before answering {where}")
            return check(left)

        try:
            return poll_until(probe, timeout_s, interval_s=interval_s)
        except WaitTimeout as timeout:
            raise self.error(
                f"{self.label} did not answer on {where} within {timeout_s:g}s ({timeout.last}); "
                f"last lines of {self.log_path}: {self.last_lines()}"
            ) from None

    def stop(self, grace_s: float | None = None) -> str:
        """SIGTERM the process group, SIGKILL what is left after grace_s (default stop_grace_s), reap
        the leader; returns how it ended, in one line. Safe to call again (it answers the same)."""
        if self.proc is None:
            return "was never started"
        if self.stopped is not None:
            return self.stopped
        proc, pgid = self.proc, self.proc.pid  # the leader's pid is the group's id
        grace_s = self.stop_grace_s if grace_s is None else grace_s
        started, how = time.monotonic(), "had already exited"

        def alive() -> bool:
            proc.poll()  # reap the leader, so it does not count as a zombie member
            return bool(group_members(pgid))

        def signal_group(sig: int) -> None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

        try:
            if alive():
                signal_group(signal.SIGTERM)
                how = "stopped by SIGTERM"
                while alive() and time.monotonic() - started < grace_s:
                    time.sleep(0.05)
        finally:  # also when interrupted while waiting: nothing of the group is left behind
            if alive():
                signal_group(signal.SIGKILL)
                how = f"killed (SIGKILL) after {grace_s:g}s"
                deadline = time.monotonic() + REAP_S
                while alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        left = group_members(pgid)
        self.stopped = f"{how} in {time.monotonic() - started:.1f}s" + (f"; still running: {left}" if left else "")
        return self.stopped

    def __enter__(self: S) -> S:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
