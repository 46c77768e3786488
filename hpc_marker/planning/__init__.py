"""planning: from a folder of PDFs to work items assigned to tasks. Pure apart from reading the PDFs.

  scan.py  what counts as a PDF, page counts (pypdfium2), a one-line reason for an unreadable one
  plan.py  WorkItem, TaskPlan, Plan; splitting long PDFs into page ranges; balancing by pages (LPT);
           the order in which a task claims items (its own share, then stealing)
"""
