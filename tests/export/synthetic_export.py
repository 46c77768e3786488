"""A finished run folder of any size with its documents on disk, for the export's tests and benchmark.

`make_export_run` writes run.json, one manifest per task (lines written one by one, so the
generator's memory stays small at 10^6 documents) and, for every ok document, its Markdown and
`_meta.json` where the collector would have left them. Document `i` is `dNNN/paper-<i>.pdf`:
every `split_every`-th is split into two parts (merged on disk), every `failed_every`-th failed,
every `retried_every`-th failed once and then converted (its ok record in another task's
manifest), every `garbled_every`-th has a garbled first page. Its text is `text_of(i, size)`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hpc_marker.engines.base import EngineOptions
from hpc_marker.runstate.layout import RUNS_SUBDIR, RunPaths
from hpc_marker.runstate.manifest import ManifestRecord
from hpc_marker.runstate.output import document_dir, document_stem
from hpc_marker.runstate.record import RunRecord


@dataclass(frozen=True)
class Expected:
    documents: int
    ok: int
    failed: int
    split: int
    garbled: int


def relpath_of(i: int) -> str:
    return f"d{i % 997:03d}/paper-{i:07d}.pdf"


def pages_of(i: int) -> int:
    return 2 + i % 29


def text_of(i: int, size: int) -> str:
    line = f"Paper {i}: synthetic text, ünïcödé 中文 and more words to fill a page.\n"
    return (line * (size // len(line.encode("utf-8")) + 1))[: max(1, size - i % 97)]


def record_of(
    i: int, item: str, start: int, stop: int, status: str, task: int, t: float, garbled: bool, out: Path
) -> ManifestRecord:
    ok = status == "ok"
    return ManifestRecord(
        item_id=item,
        pdf=relpath_of(i),
        page_start=start,
        page_stop=stop,
        pages=stop - start,
        status=status,
        error=None if ok else f"synthetic failure of {i}",
        seconds=round(0.1 * (stop - start), 3),
        engine="text",
        host=f"node{task // 4:02d}",
        gpu=str(task % 4),
        job_id=f"1000_{task}",
        task=task,
        output=str(document_dir(out, relpath_of(i)) / f"{document_stem(relpath_of(i))}.md") if ok else None,
        started=t,
        finished=t + 1.0,
        empty_pages=[] if ok else None,
        garbled_pages=([start] if garbled and start == 0 else []) if ok else None,
    )


def make_export_run(
    root: Path,
    documents: int,
    *,
    tasks: int = 16,
    text_bytes: int = 2000,
    split_every: int = 50,
    failed_every: int = 97,
    retried_every: int = 31,
    garbled_every: int = 23,
    run_id: str = "synthetic",
) -> tuple[RunPaths, Expected]:
    out = Path(root) / "out"
    paths = RunPaths(out / RUNS_SUBDIR / run_id)
    paths.create()
    paths.save_record(
        RunRecord(
            run_id=run_id,
            created=1_760_000_000.0,
            pdfs_root=str(Path(root) / "pdfs"),
            out_dir=str(out),
            engine="text",
            engine_options=EngineOptions(output_format="markdown", paginate=True),
            executor="slurm",
            tasks=tasks,
            gpus=tasks,
            workers_per_gpu=1,
            cpus_per_task=1,
            template="generic",
            time_limit="04:00:00",
            steal=True,
            lease_seconds=120.0,
            item_timeout="auto",
            umask=0o022,
            profile="generic",
        )
    )
    manifests = [paths.task_manifest(t).open("w", encoding="utf-8") for t in range(tasks)]
    ok = failed = split = garbled_docs = 0
    try:
        for i in range(documents):
            pages, task, t = pages_of(i), i % tasks, 1_760_000_100.0 + i
            garbled = i % garbled_every == 0
            is_failed, is_split = i % failed_every == 0, i % split_every == 0 and i % failed_every != 0
            if is_split:
                half = pages // 2
                parts = [(f"{i:07d}.p000", 0, half), (f"{i:07d}.p001", half, pages)]
            else:
                parts = [(f"{i:07d}", 0, pages)]
            if i % retried_every == 0 and not is_failed:
                item, start, stop = parts[-1]
                lines = [record_of(i, item, start, stop, "failed", task, t, garbled, out)]
                task = (task + 1) % tasks
            else:
                lines = []
            lines += [
                record_of(i, item, start, stop, "failed" if is_failed else "ok", task, t + 2, garbled, out)
                for item, start, stop in parts
            ]
            for line in lines:
                manifests[line.task].write(json.dumps(asdict(line), ensure_ascii=False) + "\n")
            if is_failed:
                failed += 1
                continue
            ok, split, garbled_docs = ok + 1, split + is_split, garbled_docs + garbled
            folder = document_dir(out, relpath_of(i))
            folder.mkdir(parents=True, exist_ok=True)
            stem = document_stem(relpath_of(i))
            (folder / f"{stem}.md").write_text(text_of(i, text_bytes), encoding="utf-8")
            meta = {
                "engine": "text",
                "hpcmarker_source": {
                    "size": 1000 + i,
                    "mtime_ns": i,
                    "engine": "text",
                    "format": "markdown",
                    "pages": [0, pages],
                },
            }
            (folder / f"{stem}_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    finally:
        for fh in manifests:
            fh.close()
    return paths, Expected(documents=documents, ok=ok, failed=failed, split=split, garbled=garbled_docs)
