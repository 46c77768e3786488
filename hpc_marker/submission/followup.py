"""Follow-up runs: `hpcmarker retry RUN --select SELECTOR[,SELECTOR...] [settings]`.

The documents of RUN that the selector picks are converted again as a new run into the same `--out`,
with the settings given (every other setting as RUN had it). Each document that converts replaces
the one RUN wrote (renamed into place, as always); one that fails leaves RUN's. The new run's record
names its `parent`, and `hpcmarker export RUN` takes each document's newest ok result from RUN and
its follow-ups. This is the two-pass workflow: everything with the fast `text` engine, then only
the flagged documents with marker and OCR on the GPUs.

Why a new run, and not RUN's items reopened with other settings: a run is one set of settings
(engine, format, resources) that its record, summary, report and pages/s describe; the selection is
usually a small share of RUN and is planned and balanced again, by pages, over the GPUs it asks
for; RUN's record, manifests and report stay what the first pass did; and RUN's claims and item
attempts (poison counts) are left alone.

Selectors (on RUN's newest record of each item, per document: runstate/documents.py); several,
comma-separated (`no-text,garbled`), select the documents that any of them picks:
  no-text   ok documents whose share of pages with an empty text layer is at least `min_share` (and > 0)
  garbled   the same for garbled pages
  partial   documents with pages lost (bisected items)
  failed    documents that failed, timed out or are incomplete (not encrypted ones: a password is
            needed whatever the engine)
  repetition, oversize, wide-table, empty-output, lost-script
            converted documents whose output carries that output flag (quality/flags.py)

Settings: `RunOverrides`; a field left None keeps RUN's value. A field named like an EngineOptions
field sets the engine options, any other the SubmitRequest field of the same name, so the resource
overrides (time_limit, mem, cpus_per_task, partition, gpus) are fields added here and options on
the command line, and nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from hpc_marker.engines import EngineOptions
from hpc_marker.executors import executor_for
from hpc_marker.quality.flags import FLAG_NAMES, flag_names
from hpc_marker.runstate.docindex import ManifestIndex
from hpc_marker.runstate.documents import (
    FLAGS,
    SELECTORS,
    DocumentState,
    document_state,
    flag_share,
)
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import latest_by_item
from hpc_marker.runstate.permissions import PERMISSIONS
from hpc_marker.runstate.record import ParentRun, RunRecord
from hpc_marker.submission.launch import PreparedRun, prepare_run
from hpc_marker.submission.request import (
    LaunchError,
    LlmRequest,
    NothingToDo,
    SubmitRequest,
)

RETRIED_STATUSES = ("failed", "timeout", "incomplete")


@dataclass(frozen=True)
class RunOverrides:
    """What a follow-up run changes; None keeps the first run's value."""

    engine: str | None = None
    force_ocr: bool | None = None
    extra_config: dict[str, Any] | None = None
    output_format: str | None = None
    images: bool | None = None
    paginate: bool | None = None
    run_id: str | None = None

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def apply(self, request: SubmitRequest) -> SubmitRequest:
        """`request` with these settings: engine option fields into its engine_options, the rest by name."""
        engine_fields = {f.name for f in fields(EngineOptions)}
        given = self.given()
        if "force_ocr" in given:  # retry's --force-ocr/--no-force-ocr: every page, or none; not the run's auto
            given["ocr_auto"] = False
        options = replace(request.engine_options, **{k: v for k, v in given.items() if k in engine_fields})
        changed = {k: v for k, v in given.items() if k not in engine_fields}
        if changed.get("engine", request.engine) != request.engine:
            changed["worker_memory"] = None  # sized for the first engine (and marker takes none)
        return replace(request, engine_options=options, **changed)


@dataclass
class FollowUp:
    parent: str
    selected: list[str]  # the PDFs, relative to the run's --pdfs
    prepared: PreparedRun


def is_selected(doc: DocumentState, selector: str, min_share: float) -> bool:
    """Pure: whether `selector` picks this document."""
    if selector == "failed":
        return doc.status in RETRIED_STATUSES
    if selector == "partial":
        return doc.status == "partial"
    if selector in FLAG_NAMES:
        return doc.status in ("ok", "partial") and selector in flag_names(doc.output_flags)
    share = flag_share(doc, selector)
    return doc.status == "ok" and share > 0 and share >= min_share


def parse_selectors(text: str) -> tuple[str, ...]:
    """`no-text,garbled` as ("no-text", "garbled"); LaunchError names a value that is no selector. Pure."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",")))
    wrong = [name for name in names if name not in SELECTORS]
    if wrong or not names:
        raise LaunchError(
            f"--select {text!r}: {'no selector' if not names else repr(wrong[0])}; choose one or "
            f"more of {', '.join(SELECTORS)}, comma-separated (e.g. --select no-text,garbled)"
        )
    return names


def select_documents(paths: RunPaths, selectors: tuple[str, ...], min_share: float) -> list[str]:
    """The PDFs (relative to the run's --pdfs) of RUN that any of `selectors` picks, sorted."""
    parse_selectors(",".join(selectors))
    if not 0 <= min_share <= 1:
        raise LaunchError(f"--min-share {min_share}: a share of pages from 0 to 1")
    index = ManifestIndex.build([paths.manifests])  # one document at a time: bounded memory at 10^6
    return sorted(
        pdf
        for pdf, by_run in index.by_document()
        if any(
            is_selected(document_state(latest_by_item(by_run[0]).values()), selector, min_share)
            for selector in selectors
        )
    )


def request_from_record(record: RunRecord) -> SubmitRequest:
    """A request for the same settings as `record` (and the config's defaults for what it does not hold)."""
    llm = None
    if record.llm:
        known = {f.name for f in fields(LlmRequest)}
        llm = LlmRequest(**{k: v for k, v in record.llm.to_json().items() if k in known})
    permissions = next((name for name, mask in PERMISSIONS.items() if mask == record.umask), None)
    given: dict[str, Any] = {
        "gpus": max(1, record.gpus),  # 0: a local run from before --gpus 0 was refused
        "engine": record.engine,
        "engine_options": record.engine_options,
        "profile": record.profile,
        "workers_per_gpu": record.workers_per_gpu,
        "executor": record.executor,
        "steal": record.steal,
        "bisect": record.bisect,
        "lease_seconds": record.lease_seconds,
        "item_timeout": record.item_timeout,
        "start_jitter": record.start_jitter,
        "partition": record.partition,
        "template": record.template,
        "cpus_per_task": record.cpus_per_task,
        "mem": record.mem,
        "time_limit": record.time_limit,
        "split_pages": record.split_pages,
        "worker_memory": record.worker_memory,
        "max_running": record.max_running,
        "max_output_mb_per_page": record.quality.max_output_mb_per_page if record.quality else None,
        "llm": llm,
    }
    if permissions:
        given["permissions"] = permissions
    return SubmitRequest.with_defaults(record.pdfs_root, record.out_dir, **given)


def followup_request(
    record: RunRecord, selected: list[str], selectors: tuple[str, ...], min_share: float, overrides: RunOverrides
) -> SubmitRequest:
    """The new run's request: RUN's settings with `overrides`, for just the selected PDFs."""
    request = overrides.apply(request_from_record(record))
    parent = ParentRun(run_id=record.run_id, select=",".join(selectors), min_share=min_share, documents=len(selected))
    return replace(request, only=tuple(selected), force=True, parent=parent)


def prepare_followup(
    paths: RunPaths, selectors: tuple[str, ...], min_share: float, overrides: RunOverrides, create: bool = True
) -> FollowUp:
    """Select RUN's documents and prepare their follow-up run (`submit_run` sends it); with
    `create` False nothing is written (a dry run)."""
    record = paths.load_record()
    active = executor_for(record.executor).active(record)
    if active:
        raise LaunchError(
            f"run {record.run_id} still has jobs running or queued ({', '.join(active)}): "
            "wait for them or `hpcmarker cancel` first"
        )
    selected = select_documents(paths, selectors, min_share)
    if not selected:
        raise NothingToDo(
            f"run {record.run_id}: no document selected by --select {','.join(selectors)}"
            + (f" --min-share {min_share:g}" if set(selectors) & set(FLAGS) else "")
        )
    request = followup_request(record, selected, selectors, min_share, overrides)
    return FollowUp(record.run_id, selected, prepare_run(request, create=create))
