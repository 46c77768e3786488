"""Ending a run's processes (issue 19): found by what they run on, and a process still installing its SIGTERM
handler is told again, so it stops cleanly instead of being killed."""

from __future__ import annotations

import subprocess
import sys

from hpc_marker.util.processes import process_alive, processes_with_arg, terminate_trees

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
