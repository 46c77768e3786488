"""admin: checking and preparing a site, for admins and for users on a login node.

  doctor.py    preflight checks with a fix for each failure: Slurm, partition GPUs, templates (the one
               template check `templates check` uses too), marker and its caches, ollama, --out
  checks.py    a check's result (Check: ok, warn, fail with its fix), guard, run_command
  prefetch.py  fill a shared cache on a login node so offline compute nodes need no internet

(The click commands are cli/admin.py.)
"""
