"""runtime: what runs inside one array task (one GPU).

task.py       the task's entry point (run_task): signals, its stop record and result
preempt.py    a USR2 that is a preemption (asked of Slurm), and a preempted task's wait for Slurm's requeue
startup.py    before the first item: workers and threads, the engine and LLM checks, the task's servers
taskloop.py   the loop: claim → convert → commit, item by item, in its states (running, draining, stopping)
commits.py    one item committed exactly once: its output placed, its commit-log and manifest lines
scheduler.py  which batch next: the task's own share, stealing, batches of tasks that died
mps.py        NVIDIA MPS for a task's workers (several processes on one GPU without time-slicing)
workpool.py   the task's worker processes, any one killable alone (timeouts, crashes, memory)
worker.py     a worker: its engine built once, items converted into staging folders
limits.py     per-item wall-clock limit and per-worker memory cap
threads.py    the task's CPU share and thread caps (the libgomp fix)
sizing.py     how many workers per GPU (GPU memory, CPUs, engine)
inference.py  marker 2.x's per-task VLM server (a servers.ManagedServer running `vllm serve`)
"""
