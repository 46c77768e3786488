"""runtime: what runs inside one array task (one GPU).

task.py       the task: claim → convert → commit → place → manifest line; stealing; signals
scheduler.py  which batch a task works on next (its share, then stealing), whether an idle task waits or leaves
finishing.py  finishing one item: commit it exactly once, put its output in place, record it, merge split PDFs
mps.py        NVIDIA MPS for a task's workers (several processes on one GPU without time-slicing)
workpool.py   the task's worker processes, any one killable alone (timeouts, crashes, memory)
worker.py     a worker: its engine built once, items converted into staging folders
limits.py     per-item wall-clock limit and per-worker memory cap
threads.py    the task's CPU share and thread caps (the libgomp fix)
sizing.py     how many workers per GPU (GPU memory, CPUs, engine)
inference.py  marker 2.x's per-task VLM server (a servers.ManagedServer running `vllm serve`)
"""
