"""Report: RUN/report.html, one self-contained page that shows how a run went.

This package owns the run report: a header of totals, a timeline of every task on its GPU (a bar
per work item, or per task and time bucket for large runs), pages/s over time, the failures, the
slowest PDFs, where the GPU-hours went (per task, with manage/accounting.py's advice), and the LLM
service's tokens/s, queue and errors when the run had one. It is built
from the run folder only (run.json, plan.json, the task manifests, summary.json once collected)
and stays under about 10 MB whatever the run's size.

- frames.py: pure pandas frames from manifest records, the plan, summary.json and LLM metrics;
- figures.py: plotly figures from those frames (strings from the run escaped for plotly's markup);
- page.py: reads the folder, renders `templates/report.html.j2` (Jinja2, autoescaped; plotly.js
  inlined once, so the page opens offline) and writes it atomically; imported when first used (plotly is
  loaded only to draw).
"""

__all__ = ["Limits", "build_report", "write_report"]


def __getattr__(name: str):
    """page.py's names, imported when first asked for: importing frames.py alone (the collector's ranges) does not
    load plotly and Jinja2, about 10 MB, until the page is drawn."""
    if name in __all__:
        from hpc_marker.report import page

        return getattr(page, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
