"""admin: checking and preparing a site, for admins and for users on a login node.

  doctor.py    the preflight checks in the order a run needs them (`doctor`; the cheap ones for `submit`),
               and the template check (`templates check` uses it too)
  checks.py    a check's result (Check: ok, warn, fail with its fix), guard, run_command, and one check per
               part, each with a fix when it fails: Slurm, partition GPUs, marker and its caches, ollama and
               the LLM model, --out, thread caps
  prefetch.py  fill a shared cache on a login node so offline compute nodes need no internet

(The click commands are cli/admin.py.)
"""
