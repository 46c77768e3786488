"""Quality: what looks wrong in a converted document's output, flagged so that nobody has to read it.

Modules:
- `flags.py`: the output flags of one document (repetition, oversize, wide-table, empty-output, lost-script),
  per page where the format keeps page boundaries, against the PDF's text layer; `Thresholds` (defaults.toml's
  [quality]); linear in the output. Pure.
- `document.py`: the worker's one call after conversion (`output_fields`): reads the PDF's text layer (pdfium)
  where the output is not that layer itself, and gives the manifest's `output_flags`.

Where the flags go from there: the commit log and the manifest (runstate), summary.json and `status`,
the export, and `hpcmarker retry RUN --select repetition|oversize|wide-table|empty-output|lost-script`.
"""

from hpc_marker.quality.flags import FLAG_NAMES, Flag, OutputCheck, Thresholds, check_output, flag_names

__all__ = ["FLAG_NAMES", "Flag", "OutputCheck", "Thresholds", "check_output", "flag_names"]
