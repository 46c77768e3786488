"""The engine contract: options in, one converted document out.

An engine never writes files; `hpc_marker.runstate.output` owns the output layout so every engine
produces the same tree and manifest records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hpc_marker.util.errors import UserError

if TYPE_CHECKING:
    from hpc_marker.llm.client import LlmAccess
    from hpc_marker.llm.settings import LlmRecord

# marker's paginated Markdown puts this between pages: "\n\n{<page index>}" + 48 dashes + "\n\n".
PAGE_SEPARATOR = "-" * 48


def page_marker(page_index: int) -> str:
    """The separator marker writes before a page when paginate_output is on (0-based index)."""
    return "\n\n{" + str(page_index) + "}" + PAGE_SEPARATOR + "\n\n"


class EngineUnavailable(UserError):
    """The engine cannot run here (not installed, option not supported, caches missing)."""


class EngineCacheMissing(EngineUnavailable):
    """The engine is installed, but this node lacks files it would download at first use (fonts,
    model weights): `hpcmarker prefetch` fetches them."""


class EngineError(Exception):
    """Converting one work item failed; the message is a one-line reason for the manifest."""


@dataclass(frozen=True)
class EngineOptions:
    """What the user chose for conversion; every engine reads the fields it understands."""

    paginate: bool = True
    force_ocr: bool = False  # OCR every page (--force-ocr, --force-ocr all)
    ocr_auto: bool = False  # --force-ocr auto: each document's work items say whether it gets OCR (`ocr`)
    output_format: str = "markdown"  # one of formats.OUTPUT_FORMATS (marker's renderers); old run records: markdown
    images: bool = True  # extract images (marker's disable_image_extraction when False)
    extra_config: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    # The run's LLM service, set by the task at run time only (never stored: it holds the secret)
    llm: LlmAccess | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The options as the run record keeps them (without `llm`: that is never stored; `ocr_auto` only when
        set, so the settings documents recorded before it existed still compare equal)."""
        return {
            "paginate": self.paginate,
            "force_ocr": self.force_ocr,
            **({"ocr_auto": True} if self.ocr_auto else {}),
            "output_format": self.output_format,
            "images": self.images,
            "extra_config": self.extra_config,
            "threads": self.threads,
        }

    @staticmethod
    def ocr_fields(mode: str | bool | None) -> dict[str, bool]:
        """--force-ocr's value (auto, all, none; True/False from a library caller) as the fields it sets. Pure."""
        return {"force_ocr": mode is True or mode == "all", "ocr_auto": mode == "auto"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineOptions:
        """From the run record's form, or from what a task hands its workers (with `llm`, an LlmAccess)."""
        return cls(
            paginate=bool(data.get("paginate", True)),
            force_ocr=bool(data.get("force_ocr", False)),
            ocr_auto=bool(data.get("ocr_auto", False)),
            output_format=str(data.get("output_format", "markdown")),
            images=bool(data.get("images", True)),
            extra_config=dict(data.get("extra_config", {})),
            threads=int(data.get("threads", 1)),
            llm=data.get("llm"),
        )

    @staticmethod
    def load_extra_config(path: Path) -> dict[str, Any]:
        """Read a JSON file of extra engine settings; raise ValueError with a one-line reason."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: must hold a JSON object of settings")
        return data


RUNTIME_OPTIONS = ("threads", "llm")  # how a task runs, not what it writes
LLM_OUTPUT_KEYS = ("model", "ctx", "options")  # of the run's LLM service (LlmRecord): what refines the text


def output_settings(engine: str, options: EngineOptions, llm: LlmRecord | None = None) -> dict[str, Any]:
    """What decides a document's content: the engine, its output-affecting options, and the LLM that
    refines it (model and parameters, not where it runs). Each document's metadata records them; an
    output is up to date only for the same settings. JSON-normalized, so records compare equal. Pure."""
    chosen = {key: value for key, value in options.to_json().items() if key not in RUNTIME_OPTIONS}
    refine = {key: getattr(llm, key) for key in LLM_OUTPUT_KEYS} if llm else None
    return json.loads(json.dumps({"engine": engine, **chosen, "llm": refine}, sort_keys=True))


# Options no supported engine takes any more, at the value documents recorded before they went (output_settings)
RETIRED_OPTIONS: dict[str, Any] = {"languages": []}  # marker-pdf 1.7 dropped it; hpcmarker's --languages went too


def same_settings(recorded: Any, wanted: dict[str, Any]) -> bool:
    """Whether a document's recorded output settings are `wanted` (output_settings), a retired option left at
    its unset value aside. Pure."""
    if not isinstance(recorded, dict):
        return False
    return {
        key: value for key, value in recorded.items() if key not in RETIRED_OPTIONS or RETIRED_OPTIONS[key] != value
    } == wanted


@dataclass
class ConvertedDocument:
    """One converted work item: `text` in `format` (see formats.py: Markdown, marker's JSON, HTML or
    chunks), `images` maps file names (as the text references them) to bytes, `metadata` is the
    engine's (with `text_layer`, one entry per page checked: textlayer.py)."""

    text: str
    format: str = "markdown"
    images: dict[str, bytes] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """Constructed once per worker process; `convert` is called once per work item."""

    name: str

    @classmethod
    def check(cls, options: EngineOptions) -> None:
        """Cheap preflight: raise EngineUnavailable naming what is missing."""

    @classmethod
    def check_node(cls, options: EngineOptions, server: bool = False) -> None:
        """What this node needs to start the engine (caches, binaries), checked by each task before any
        worker starts (`server`: the task starts its inference server); optional. Raise EngineCacheMissing
        or EngineUnavailable in one short line."""

    def __init__(self, options: EngineOptions) -> None: ...

    def convert(self, pdf: Path, pages: range | None, ocr: bool | None = None) -> ConvertedDocument:
        """Convert `pages` (0-based page indices; None = whole PDF) of `pdf`; raise EngineError. `ocr`: the item's
        decision under --force-ocr auto (None: the run's options alone decide)."""
