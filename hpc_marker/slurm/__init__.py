"""slurm: talking to Slurm, without submitting (that is executors/slurm.py, through submitit).

  commands.py  sinfo, sacct, squeue, scancel as argv lists; read-only queries retried with backoff
  parse.py     pure parsers: job ids and arrays (submitit's read_job_id), time limits, squeue lines,
               dependencies
  wedge.py     a run whose jobs pend forever (DependencyNeverSatisfied): found and described (pure)
"""
