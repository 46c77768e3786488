"""`python -m hpc_marker ...` is `hpcmarker ...`."""

from hpc_marker.cli import main

main()
