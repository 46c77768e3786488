"""A stand-in for marker's models that does real CUDA work per page, for benchmarks/gpu_check.sh.

The `benchmark` engine runs it in each worker when HPCMARKER_BENCH_WORKLOAD names this file: `load()` once per
worker (the "model load": LAYERS fp16 matrices of SIZE x SIZE on the worker's GPU), `work(pages)` per item (per
page: a batch through every layer, then a CUDA synchronize). After each item the worker writes what it saw to
GPU_CHECK_OUT/worker-PID.json: its CUDA_VISIBLE_DEVICES, how many GPUs torch sees and the UUID of its device 0,
the MPS pipe it was given, pages done, when its first page began and its last ended, and its peak GPU memory.

Without CUDA (GPU_CHECK_DEVICE=cpu, or no torch here) the same arithmetic runs on the CPU, smaller (torch if it
imports, else numpy): what `gpu_check.sh --dry-run` uses to prove the plumbing.

    python benchmarks/gpu_workload.py --bare --pages 200   # the bare loop: one process, no hpcmarker
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

LAYERS = int(os.environ.get("GPU_CHECK_LAYERS", "8"))
BATCH = int(os.environ.get("GPU_CHECK_BATCH", "512"))
STATE: dict = {}


def _backend() -> str:
    wanted = os.environ.get("GPU_CHECK_DEVICE", "cuda")
    try:
        import torch
    except ImportError:
        return "numpy"
    return "cuda" if wanted == "cuda" and torch.cuda.is_available() else "torch-cpu"


def load() -> None:
    """Allocate the "model" on this worker's device (once per worker)."""
    backend = _backend()
    size = int(os.environ.get("GPU_CHECK_SIZE", "4096" if backend == "cuda" else "128"))
    batch = BATCH if backend == "cuda" else 16
    if backend == "numpy":
        import numpy as np

        rng = np.random.default_rng(0)
        weights = [rng.standard_normal((size, size), dtype=np.float32) / size**0.5 for _ in range(LAYERS)]
        sample = rng.standard_normal((batch, size), dtype=np.float32)
    else:
        import torch

        device, dtype = ("cuda", torch.float16) if backend == "cuda" else ("cpu", torch.float32)
        generator = torch.Generator(device=device).manual_seed(0)
        weights = [
            torch.randn(size, size, device=device, dtype=dtype, generator=generator) / size**0.5 for _ in range(LAYERS)
        ]
        sample = torch.randn(batch, size, device=device, dtype=dtype, generator=generator)
    STATE.update(backend=backend, weights=weights, sample=sample, pages=0, first=None, last=None)


def _page() -> None:
    x = STATE["sample"]
    if STATE["backend"] == "numpy":
        import numpy as np

        for w in STATE["weights"]:
            x = np.tanh(x @ w)
        return
    import torch

    with torch.no_grad():
        for w in STATE["weights"]:
            x = torch.tanh(x @ w)
    if STATE["backend"] == "cuda":
        torch.cuda.synchronize()


def work(pages: int) -> None:
    """The work of `pages` pages, then this worker's report."""
    if not STATE:
        load()
    began = time.time()
    for _ in range(max(1, pages)):
        _page()
    STATE["first"] = STATE["first"] or began
    STATE["last"] = time.time()
    STATE["pages"] += max(1, pages)
    _report()


def _device_facts() -> dict:
    if STATE["backend"] != "cuda":
        return {"device_count": 0, "gpu_uuid": None, "gpu_name": None, "peak_memory_mb": None}
    import torch

    props = torch.cuda.get_device_properties(0)
    uuid = getattr(props, "uuid", None)
    return {
        "device_count": torch.cuda.device_count(),
        "gpu_uuid": f"GPU-{uuid}" if uuid is not None and not str(uuid).startswith("GPU-") else uuid,
        "gpu_name": props.name,
        "peak_memory_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
    }


def _report() -> None:
    out = os.environ.get("GPU_CHECK_OUT")
    if not out:
        return
    facts = {
        "pid": os.getpid(),
        "backend": STATE["backend"],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "mps_pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
        "pages": STATE["pages"],
        "first": STATE["first"],
        "last": STATE["last"],
        **_device_facts(),
    }
    path = Path(out) / f"worker-{os.getpid()}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(facts))
    temporary.replace(path)


def bare(pages: int) -> dict:
    """The same work in one process, page after page: pages/s without hpcmarker around it."""
    load()
    work(1)  # warm-up (kernels, allocator), not timed
    began = time.time()
    for _ in range(pages):
        _page()
    seconds = time.time() - began
    return {"backend": STATE["backend"], "pages": pages, "seconds": round(seconds, 3), "pages_per_s": pages / seconds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the bare loop of the stand-in workload")
    parser.add_argument("--bare", action="store_true", required=True)
    parser.add_argument("--pages", type=int, default=200)
    print(json.dumps(bare(parser.parse_args().pages)))
