"""slurm: talking to Slurm (what a job runs and its pickled call are executors/slurm.py's business).

commands.py  sbatch, sinfo, sacct, squeue, scancel, scontrol, sacctmgr as argv lists; read-only queries retried
parse.py     pure parsers: job ids and arrays, sbatch's answer, sacct and squeue lines, time limits,
             dependencies, `scontrol show config`, the user's sacctmgr limits, a job's preemption
arrays.py    a run's tasks as job arrays within MaxArraySize, MaxSubmitJobs and --max-running (pure)
wedge.py     a run whose jobs pend forever (DependencyNeverSatisfied): found and described (pure)
pending.py   squeue pending reasons that will never clear by waiting (pure)
"""
