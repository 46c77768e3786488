"""util: small helpers every layer may use, and that import nothing else of hpcmarker.

text.py       one_line: an exception (or any text) as one line for a manifest, a log or an error;
              plural: a count and its noun ("1 task", "2 tasks")
files.py      atomic_write: write a whole file under its final name or not at all
processes.py  process trees (psutil): alive, descendants, environment, terminate then kill; die with the parent
errors.py     UserError: bad input, said in one line, exit code 2
frames.py     isin: membership of strings in a frame column, by Arrow (fast at 10^6 rows); distinct_rows: a
              frame's distinct rows a chunk at a time; busy_seconds: how long work was in flight (the idle gaps
              between a run's submissions left out)
commands.py   command_line: a command hpcmarker prints, shell-quoted so that it runs as printed; ocr_command
locks.py      FileLock: a lock file on a shared filesystem (exclusive create; holder host/pid/time; renewed while
              held; a stale one taken over); read_holder
logs.py       configure: the one place logging is set up (the CLI's -v/-q on stderr; a job's timestamped lines on
              stdout); JobEntry: a job's callable with its logging (what the executors run)
memory.py     allocators that hand freed memory back (Arrow's jemalloc pool, asked for before pyarrow is imported;
              glibc's mmap threshold fixed); give_back: what they keep of freed memory, handed back
jobrun.py     the job runner every job runs (`python -u -m hpc_marker.util.jobrun JOBS`): loads its one pickled
              JobCall (per sbatch or local start), runs it; a job's id (`job_id`) and log names (`job_logs`)
"""
