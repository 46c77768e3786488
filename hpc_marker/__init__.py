"""hpcmarker: convert folders of PDFs to Markdown on a Slurm GPU cluster.

The subpackages are the pipeline's seams, and dependencies flow one way (docs/architecture.md):
cli → submission, manage, admin, report → executors, runtime → runstate, planning, slurm, llm,
engines, servers, quality/, config → util. export (a run's documents as one dataset) sits beside manage;
quality/ flags what looks wrong in a converted document's output.
__main__.py makes `python -m hpc_marker` the `hpcmarker` command.
"""

__version__ = "0.1.0"
