"""planning: from a folder of PDFs to work items assigned to tasks. Pure apart from reading the PDFs
(and the user's page-count cache).

  scan.py          what counts as a PDF, page counts (pypdfium2, low-priority processes), a one-line
                   reason for an unreadable one
  scancache.py     the page-count cache: one file per scanned folder in the user's cache folder, keyed by
                   path, size and mtime (with each PDF's text-layer sample, for --force-ocr auto)
  textcheck.py     --force-ocr auto: a few pages' text layer read at scan time, and whether a PDF gets OCR
  scanprogress.py  the scan's progress bar (rich, stderr)
  plan.py  WorkItem, TaskPlan, Plan, ItemRows (work items as Arrow columns); splitting long PDFs into
           page ranges; balancing by pages (LPT; pages that go to OCR weigh more); the order in which a
           task claims items (its own share, then stealing)
  balance.py  the plan's arithmetic on numpy arrays: page ranges of parts, LPT, batches (10^6 items in
              seconds)
  bisect.py  the halves of a failing item (ids from their page ranges), down to the pages that fail
  outnames.py  each PDF's document name under --out, unique on case-insensitive filesystems too
  rates.py  conversion rates measured by finished runs (the user's cache folder), and what they predict
            for a folder (`estimate`: wall time, GPU-hours, the fewest GPUs for a deadline; pure but the file)
  store.py  the plan on disk (PLAN/items.parquet, one row group per task), read in pieces
"""
