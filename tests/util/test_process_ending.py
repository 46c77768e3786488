"""Ending a run's processes (issue 19): found by what they run on, and a process still installing its SIGTERM
handler is told again, so it stops cleanly instead of being killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from hpc_marker.util.processes import (
    group_members,
    process_alive,
    process_runs,
    process_tree,
    processes_with_arg,
    processes_with_env,
    terminate_trees,
)

LATE_HANDLER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)  # still starting: SIGTERM is lost\n"
    "print('ready', flush=True)\n"
    "time.sleep(1.0)\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))  # now it listens, and stops cleanly\n"
    "time.sleep(60)\n"
)


def test_a_process_that_ignored_sigterm_while_starting_is_told_again_and_stops_cleanly():
    child = subprocess.Popen([sys.executable, "-c", LATE_HANDLER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert terminate_trees([child.pid], grace_s=20) == []  # none had to be killed
        assert child.wait(timeout=5) == 7
    finally:
        child.kill()
        child.wait()


def test_processes_are_found_by_an_argument(tmp_path):
    folder = str(tmp_path / "jobs")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", folder, "submitit"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", folder + "2", "submitit"])
    try:
        assert processes_with_arg(folder, also="submitit") == [child.pid]  # not the one on another folder
        assert processes_with_arg(folder, also="something else") == []
    finally:
        for process in (child, other):
            process.kill()
            process.wait()
    assert not process_alive(child.pid) and processes_with_arg(folder) == []


def test_a_tree_its_group_its_environment_and_a_zombie_are_seen_as_they_are(tmp_path):
    """util/processes reads process trees through psutil: descendants, group members, a process by its
    environment and command line; a zombie (exited, not reaped) is not alive, nor a member of its group."""
    marker = f"hpcmarker-test-{tmp_path.name}"
    grandchild = "import time; time.sleep(60)"
    child_code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, marker],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HPCMARKER_TEST_TAG": marker},
        start_new_session=True,
    )
    try:
        grandchild_pid = int(child.stdout.readline())
        assert set(process_tree(child.pid)) == {child.pid, grandchild_pid}
        assert sorted(group_members(child.pid)) == sorted([child.pid, grandchild_pid])  # its own session's group
        assert processes_with_env("HPCMARKER_TEST_TAG", marker, command_has=marker) == [child.pid]
        assert processes_with_env("HPCMARKER_TEST_TAG", marker + "x") == []
        assert process_runs(child.pid, marker) and not process_runs(child.pid, marker + "x")
        os.kill(grandchild_pid, signal.SIGKILL)  # its parent does not reap it: a zombie
        deadline = time.monotonic() + 10
        while process_alive(grandchild_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not process_alive(grandchild_pid) and group_members(child.pid) == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid) and process_tree(child.pid) == [child.pid]
