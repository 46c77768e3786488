"""runstate: the run folder and what is recorded in it; shared by the login node and every task.

layout.py       RunPaths: where everything of a run lives (OUT/.hpcmarker/runs/<run-id>/)
record.py       RunRecord (run.json): the run's settings (typed parts, JobSettings) and job ids; its version
index.py        the user's run index: find a run by id, folder, or the latest
permissions.py  who may read what a run writes (umask per --permissions; the run folder is private)
claims.py       exactly-once work claims on shared filesystems (atomic link, leases, done markers)
manifest.py     one JSON line per work item, appended whole; torn lines reported; the latest record per item
progress.py     per task: its heartbeat (progress/task-<i>.json) and its commit log (one short line per item)
documents.py    a run's manifest records seen per PDF (a split PDF is one document of several items; pure)
docindex.py     the manifest lines of one or more runs, read back one document at a time (bounded memory)
output.py       the output layout; staging folders renamed into place (another format's files kept);
                merging split PDFs' parts
finish.py       placing committed outputs and merging parts (tasks and collector alike); documents
                put together around lost pages
subitems.py     a bisected item's halves folded back (pure): leaves, lost pages, partial
summary.py      what the records add up to (pure): counts, pages, rates, documents; per item set, added up
buckets.py      a run's items and manifest records split by PDF range into spill files (the collector's
                bounded memory), manifests read in blocks of lines
light.py        the few columns of every record the collector adds up over the run, as small numpy arrays
stops.py        each task's own record of why it stopped (progress/stop-<i>.json)
outlock.py      one active run per --out (OUT/.hpcmarker/active)
"""
