"""manage: a run after submission, asked from the login node (or by the run's own collector job).

  collect.py  merge the task manifests into manifest.csv and summary.json, finish what killed tasks
              left, gather logs, stop the run's service, write the report; the collector job continues the run
  collectparts.py  the collector's one pass over the run, a PDF range at a time: leftovers finished,
              manifest.csv's rows, the summary's and the report's parts of each range
  status.py   where a run stands: per task states and progress, totals, rate, ETA (pure `status_of`)
  tally.py    how much is finished per share: from summary.json once collected, else the commit logs
  statustable.py  status drawn for a person: the task table, its caption, the lines under it, --watch
  cancel.py   cancel every job of a run, mark it cancelled, free its --out
  verdict.py  what a run's state means (pure): finished or incomplete, one line per cause, the next
              command, status's exit code
  logs.py     the log a user asks for (`hpcmarker logs`), found from the run's record
  failures.py the first failed documents and their reasons (status, and which task's log `logs` shows)
  accounting.py  where the run's GPU-hours went (per job of each task: start-up, converting, LLM wait, draining,
              idle), from the scheduler's clock (sacct) or the tasks' own; gpu_hours, efficiency, cost, advice
  followups.py  the --out's follow-up runs that are not finished (status names them)
  rounds.py   whether a run submits its next round itself (pure `next_round`), the rounds in run.json
  settled.py  what a collected run's tasks left (final job states, stop records, heartbeat states), kept in
              summary.json so that `status` of a collected run reads no per-task file (pure)

Jobs are asked about only through the run's executor (executors/).
"""
