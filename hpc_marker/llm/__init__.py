"""LLM service: an Ollama server run as a Slurm "service" job of a run, behind an authenticating front.

  settings.py  RUN/llm/ layout, settings.json (LlmSettings), the derived model's name, private files
  process.py   the local `ollama serve`: find it, start it (a servers.ManagedServer), wait until it answers
  rules.py     pure rules of the front: authorize(method, path, secret), the allowlist, token counting
  front.py     the authenticating reverse proxy: per-run secret in the path, allowlist, timeouts, counters
  service.py   serve_llm(run_dir): what the service job runs
  client.py    ollama_client (every ollama.Client hpcmarker builds); task side: wait_for_service,
               Endpoint.base_url, refine_pages (the `text` engine's refinement)
  bench.py     tokens/s and latency at each concurrency, to choose --llm-parallel
(The `hpcmarker llm` click group is cli/llm.py.)

Nothing is imported here, so `import hpc_marker.llm` does no work.
"""
