"""Which PDFs a run converts and under which names: those whose outputs are not already current, the
documents' names (planning/outnames.py), and the notes on names the user should see."""

from __future__ import annotations

from pathlib import Path

from hpc_marker.engines import output_settings
from hpc_marker.engines.base import same_settings
from hpc_marker.engines.formats import EXTENSIONS
from hpc_marker.planning.outnames import output_names, renamed_note
from hpc_marker.planning.scan import ScannedPdf
from hpc_marker.planning.store import out_names
from hpc_marker.runstate.layout import RUNS_SUBDIR, RunPaths
from hpc_marker.runstate.output import (
    document_dir,
    document_file,
    document_stem,
    long_names,
    meta_file,
    read_meta,
)
from hpc_marker.submission.request import NothingToDo, SubmitRequest
from hpc_marker.util.text import plural


def outputs_to_make(
    request: SubmitRequest, out: Path, scanned: list[ScannedPdf], names: dict[str, str]
) -> tuple[list[str], list[ScannedPdf]]:
    """(the PDFs whose outputs are up to date, those to convert); NothingToDo when none is left."""
    wanted = output_settings(request.engine, request.engine_options, request.llm.record() if request.llm else None)
    up_to_date = (
        []
        if request.force
        else [pdf.relpath for pdf in scanned if output_is_current(out, pdf, wanted, names.get(pdf.relpath, ""))]
    )
    todo = [pdf for pdf in scanned if pdf.relpath not in set(up_to_date)]
    if not todo:
        which = "the PDF already has its" if len(scanned) == 1 else f"all {len(scanned):,} PDFs already have"
        raise NothingToDo(
            f"{which} outputs in {out} made from the same files with the same engine and options (--force redoes them)"
        )
    return up_to_date, todo


def name_notes(request: SubmitRequest, todo: list[ScannedPdf], names: dict[str, str]) -> list[str]:
    """The notes on the documents' names: those renamed, those too long for their metadata file's name."""
    renamed = {pdf.relpath: names[pdf.relpath] for pdf in todo if pdf.relpath in names}
    notes = [note] if (note := renamed_note(renamed, EXTENSIONS[request.engine_options.output_format])) else []
    if long := long_names([pdf.relpath for pdf in todo]):
        notes.append(
            f"note: {plural(len(long), 'PDF name')} {'is' if len(long) == 1 else 'are'} too long for "
            f"`<name>{'_meta.json'}` (255 bytes); their metadata goes to a shortened name, "
            f"e.g. {meta_file(Path(), document_stem(long[0])).name}"
        )
    return notes


def document_names(request: SubmitRequest, out: Path, scanned: list[ScannedPdf]) -> dict[str, str]:
    """The renamed documents of this run (planning/outnames.py): from the whole scan, or for a follow-up run
    (which scans only its selection) its parent's, so that it writes where its parent did."""
    if request.parent:
        parent = RunPaths(out / RUNS_SUBDIR / request.parent.run_id)
        return out_names(parent.plan)
    return output_names([pdf.relpath for pdf in scanned])


def output_is_current(out: Path, pdf: ScannedPdf, wanted: dict, out_name: str = "") -> bool:
    """The PDF's document exists, whole (no page lost: a partial document is converted again), and was
    made from this very file (size and mtime) with the settings `wanted` (engines.output_settings: the
    engine and its output-affecting options, the output format among them). A document that does not
    record its settings (written before they were recorded) is not current."""
    output_format = wanted.get("output_format", "markdown")
    if not document_file(out, pdf.relpath, output_format, out_name).is_file():
        return False
    try:
        metadata = read_meta(
            document_dir(out, pdf.relpath, out_name), document_stem(pdf.relpath, out_name), output_format
        )
        source = metadata.get("hpcmarker_source", {})
        stat = pdf.path.stat()
    except (OSError, ValueError, AttributeError):
        return False
    return (
        source.get("size") == stat.st_size
        and source.get("mtime_ns") == stat.st_mtime_ns
        and same_settings(source.get("settings"), wanted)
        and not metadata.get("lost_pages")
    )
