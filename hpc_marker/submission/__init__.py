"""submission: on the login node, from a request to a submitted run.

request.py    SubmitRequest and LlmRequest (defaults from the config), the profile they resolve
              against, and the checks that refuse bad input before anything is created
templates.py  Jinja2 sbatch templates per role on a search path; every value shell-quoted
scripts.py    each role's template variables, the rendered scripts, `--dry-run`'s text
launch.py     scan → plan → run folder → scripts → the run's executor
outputs.py    which PDFs a run converts (outputs not current) and its documents' names
estimate.py   `hpcmarker estimate`: a folder's pages at a recorded rate (wall time, GPU-hours, cost); submit's line
resume.py     resubmit only the unfinished tasks of a run; retry failed (not poison) items
followup.py   follow-up runs (`hpcmarker retry RUN --select ...`): chosen documents again, into the same --out
overrides.py  the resources resume, retry and grow may change (--time, --mem, --gpus, ...), checked
grow.py       `hpcmarker grow`: tasks added to a running run (no share: they steal), its collector waiting for them
"""
