"""Servers: the one managed-server class for every server process hpcmarker starts.

  managed.py  ManagedServer: an argv (never a shell string) started in its own process group that
              dies with its parent (even on SIGKILL), its output in a log headed by the argv, an
              environment; `wait_until_healthy` (bounded, watching the process), `stop` (SIGTERM to
              the group, SIGKILL after a grace, reaped), a context manager; `free_port`, `log_tail`
  health.py   `poll_until`, the bounded wait every "until it answers" loop uses (a local server's
              health, a run's remote LLM service), and `http_ok`, one HTTP probe
  vllm.py     how a `vllm serve` is started: its command line, the Apptainer/Singularity wrapping, the
              executable lookup, the check that it serves the model asked for; InferenceSettings (marker
              2.x's per-task server, as the run record keeps it)
  compilecache.py  first_compile: a vLLM configuration's first start under the lock of its compile cache
              folder (util/locks.py), so that tasks starting together do not compile into it at once; the marker
              of a filled cache lets later starts skip the lock

Users: marker 2.x's per-task `vllm serve` (runtime/inference.py), the Ollama or vLLM server of a
run's LLM service and of `llm bench --start` (llm/process.py, llm/vllm.py), Ollama for `prefetch
--llm`. ManagedServer knows nothing of any of them: argv, env, log, health URL or check, stop.
Depends only on util/ (and httpx); nothing is imported here, so importing the package does no work.
"""
