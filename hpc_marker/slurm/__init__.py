"""slurm: talking to Slurm, without submitting (that is executors/slurm.py, through submitit).

  commands.py  sinfo, sacct, squeue, scancel, scontrol, sacctmgr as argv lists; read-only queries retried
  parse.py     pure parsers: job ids and arrays (submitit's read_job_id), time limits, squeue lines,
               dependencies, `scontrol show config`, the user's sacctmgr limits
  arrays.py    a run's tasks as job arrays within MaxArraySize, MaxSubmitJobs and --max-running (pure)
  wedge.py     a run whose jobs pend forever (DependencyNeverSatisfied): found and described (pure)
  pending.py   squeue pending reasons that will never clear by waiting (pure)
"""
