"""LLM service: an Ollama or vLLM server run as the "service" job(s) of a run, behind an authenticating front.

  settings.py  RUN/llm/ layout (per replica), settings.json (LlmSettings, vLLM flags), the derived model's name;
               LlmRecord, the service as the run record keeps it (RunRecord.llm)
  process.py   the local `ollama serve`: find it, start it (a servers.ManagedServer), wait until it answers
  vllm.py      the service's `vllm serve` (servers/vllm.py's command line, its own API key), a ManagedServer
  rules.py     pure rules of the front: authorize(method, path, secret, allowlist, bearer), the allowlists
               per server, token counting
  gate.py      FairGate: the front's bound on generations at the server, the rest queued fairly across tasks
  front.py     the authenticating reverse proxy (an aiohttp server in a thread of its own): secret, allowlist,
               stats; a fixed upstream or a Route with failover
  proxy.py     the front's forwarding: the gate, failover across a Route's targets, timeouts, the streamed relay
  reasoning.py a reasoning model's answer left in thinking/reasoning_content moved into the content (pure; the front)
  counters.py  the front's counters per task, its stats and its metrics file
  service.py   serve_llm(run_dir, replica): what each service job runs
  check.py     the service's capability check: one request as marker (or the text engine) sends it, through the
               replica's front, before any task depends on it; a one-line reason when the server or model fails it
  client.py    ollama_client / openai_client (every client hpcmarker builds), chat_client; task side:
               wait_for_service (any replica), Endpoint
  replicas.py  ReplicaRoute and task_relay: a task's requests go to its own replica, or the next live one
  refine.py    refine_pages: the `text` engine's refinement
  budget.py    plan_budget: the run's concurrency budget (per-worker concurrency, client timeout, retries)
  metrics.py   per-replica summaries of the fronts' metrics, and which bound a run is on
  bench.py     tokens/s and latency at each concurrency, to choose --llm-parallel (Ollama or vLLM)
(The `hpcmarker llm` click group is cli/llm.py.)

Nothing is imported here, so `import hpc_marker.llm` does no work.
"""
