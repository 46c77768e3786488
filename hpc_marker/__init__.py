"""hpcmarker: convert folders of PDFs to Markdown on a Slurm GPU cluster."""

__version__ = "0.1.0"
