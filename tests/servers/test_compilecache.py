"""servers/compilecache: the first start of a vLLM configuration compiles alone into a shared cache folder; once it
answers, the others start without the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_marker.servers.compilecache import LOCK_NAME, compile_cache_dir, compile_key, first_compile
from hpc_marker.util.locks import LockTimeout

ROOT = Path(__file__).resolve().parents[2]
STARTER = """
import sys, time
from pathlib import Path
from hpc_marker.servers import compilecache
with compilecache.first_compile(Path(sys.argv[1]), "k1", timeout_s=60, poll_s=0.05) as compiled:
    began = time.time()
    time.sleep(float(sys.argv[2]))  # the server's start
    compiled()
    ended = time.time()
print(began, ended, flush=True)
"""


def start(cache: Path, seconds: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", STARTER, str(cache), str(seconds)], stdout=subprocess.PIPE, text=True, env=env
    )


def span(process: subprocess.Popen) -> tuple[float, float]:
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    began, ended = map(float, out.split()[-2:])
    return began, ended


def test_the_first_start_compiles_alone_and_the_others_follow_once_it_answers(tmp_path):
    cache = tmp_path / "vllm"
    processes = [start(cache, 1.0) for _ in range(3)]
    spans = sorted(span(p) for p in processes)
    first_end = spans[0][1]
    assert all(began >= first_end for began, _ in spans[1:])  # nobody started while the first compiled
    assert not (cache / LOCK_NAME).exists()
    assert [p.name for p in cache.iterdir()] == [".hpcmarker-compiled-k1"]


def test_a_failed_first_start_marks_nothing_and_the_next_takes_the_lock(tmp_path, log_lines):
    cache = tmp_path / "vllm"
    with pytest.raises(RuntimeError), first_compile(cache, "k1", timeout_s=5):
        raise RuntimeError("server exited")
    assert not list(cache.iterdir())  # no marker, no lock
    with first_compile(cache, "k1", timeout_s=5) as compiled:
        assert (cache / LOCK_NAME).exists()
        compiled()
    assert sum("holding its lock" in line for line in log_lines()) == 2


def test_a_filled_cache_takes_no_lock_and_a_held_lock_bounds_the_wait(tmp_path):
    cache = tmp_path / "vllm"
    cache.mkdir()
    lock = cache / LOCK_NAME
    lock.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "since": time.time(), "token": "t"}))
    held = r"held by node-elsewhere pid 1 .* after 0.3 s of waiting"
    with pytest.raises(LockTimeout, match=held), first_compile(cache, "k1", timeout_s=0.3, poll_s=0.05):
        pass
    (cache / ".hpcmarker-compiled-k2").write_text("1\n")
    with first_compile(cache, "k2", timeout_s=0.3, poll_s=0.05) as compiled:  # filled for k2: no wait
        compiled()


def test_the_key_ignores_what_changes_every_start_and_the_folder_is_vllms():
    argv = ["vllm", "serve", "m", "--host", "127.0.0.1", "--port", "4001", "--max-num-seqs", "32"]
    assert compile_key(argv, "80GB") == compile_key([*argv[:6], "5002", *argv[7:]], "80GB")
    assert compile_key(argv, "80GB") != compile_key(argv, "40GB")
    assert compile_key(argv, "80GB") != compile_key([*argv[:-1], "64"], "80GB")
    assert compile_cache_dir({"VLLM_CACHE_ROOT": "/shared/vllm", "HOME": "/h"}) == Path("/shared/vllm")
    assert compile_cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/vllm")
    assert compile_cache_dir({"HOME": "/h"}) == Path("/h/.cache/vllm")
