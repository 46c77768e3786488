"""The `marker` engine: marker-pdf's Python API in-process, for marker 1.10.x and 2.0.x.

Owns: mapping EngineOptions onto marker's own config (through marker's ConfigParser, the
way `marker_single` does, from the options markeroptions.py builds), validating every key
against the installed marker's config keys, the offline-cache preflight (`missing_cache_pieces`),
loading models once per worker and turning one rendered document into a ConvertedDocument.
marker is imported lazily, so hpc_marker imports without it. Version notes: docs/marker-versions.md.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import shutil
import sys
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

from hpc_marker.engines.base import (
    ConvertedDocument,
    EngineCacheMissing,
    EngineError,
    EngineOptions,
    EngineUnavailable,
)
from hpc_marker.engines.cachepieces import describe_missing, is_cache_piece
from hpc_marker.engines.formats import check_output_format, page_texts
from hpc_marker.engines.llmtiming import service_clock
from hpc_marker.engines.markeroptions import RESERVED, cli_options, llm_settings, page_range_string
from hpc_marker.engines.textlayer import check_pages
from hpc_marker.util.text import one_line

INSTALL_HINT = "engine 'marker' needs marker-pdf: pip install \"hpc-marker[marker]\""
SUPPORTED = ((1, 10), (2, 0))  # (major, minor) series this module was written against


def marker_version() -> str | None:
    """The installed marker-pdf version, or None."""
    try:
        return metadata.version("marker-pdf")
    except metadata.PackageNotFoundError:
        return None


def marker_major(version: str | None) -> int | None:
    """The major version of a marker-pdf version string ("2.0.0" -> 2); None when there is none. Pure."""
    head = (version or "").split(".")[0]
    return int(head) if head.isdigit() else None


def _series(version: str) -> tuple[int, int]:
    parts = ([*version.split("."), "0"])[:2]
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def _require_marker() -> str:
    version = marker_version()
    if version is None:
        raise EngineUnavailable(INSTALL_HINT)
    if _series(version) not in SUPPORTED:
        wanted = ", ".join(f"{a}.{b}.x" for a, b in SUPPORTED)
        raise EngineUnavailable(f"engine 'marker' supports marker-pdf {wanted}; installed: {version}")
    return version


def marker_config_keys() -> tuple[set[str], dict[str, Any]]:
    """marker's own valid keys: every Annotated attribute of its builders, processors,
    converters, providers, renderers and services (bare and `ClassName_attr`, as its
    ConfigCrawler collects them), and the click options of `ConfigParser.common_options`."""
    version = _require_marker()
    try:
        from marker.config.crawler import crawler
        from marker.config.parser import ConfigParser
    except Exception as exc:
        raise EngineUnavailable(
            f"marker-pdf {version} is installed but does not import: {one_line(exc, with_type=True, empty='no detail')}"
        ) from None

    def _target() -> None: ...

    params = getattr(ConfigParser.common_options(_target), "__click_params__", [])
    return set(crawler.attr_set), {p.name: p for p in params}


def _validate(options: EngineOptions, version: str) -> None:
    check_output_format(options.output_format)
    attrs, cli = marker_config_keys()
    valid = attrs | set(cli)
    for key, value in options.extra_config.items():
        if key in RESERVED:
            raise EngineUnavailable(f"marker setting {key!r} cannot be set in extra config: {RESERVED[key]}")
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid), n=5)
            hint = f"; close matches: {', '.join(near)}" if near else ""
            raise EngineUnavailable(
                f"unknown marker setting {key!r} for marker-pdf {version} ({len(valid)} valid keys, "
                f"see `marker_single config --help`){hint}"
            )
        choices = getattr(getattr(cli.get(key), "type", None), "choices", None)
        if choices and value not in choices:
            raise EngineUnavailable(
                f"marker setting {key!r}={value!r} is not valid for marker-pdf {version}; valid: {', '.join(choices)}"
            )


def build_marker_config(options: EngineOptions, pages: range | None = None) -> dict[str, Any]:
    """marker's config dict, made by marker's own ConfigParser.generate_config_dict."""
    version = _require_marker()
    _validate(options, version)
    from marker.config.parser import ConfigParser

    _, cli = marker_config_keys()
    config = ConfigParser(cli_options(options, pages)).generate_config_dict()
    # Like --config_json: plain settings go in as given, so falsy values survive
    # (marker 1.10's generate_config_dict drops every falsy CLI value).
    config.update({k: v for k, v in options.extra_config.items() if k not in cli})
    config.update(llm_settings(options))
    config.setdefault("pdftext_workers", max(1, min(options.threads, 4)))
    return config


def _s3_piece(checkpoint: str, cache_dir: str) -> str | None:
    """surya's own test for a cached s3:// checkpoint: manifest.json and every file it lists."""
    local = Path(cache_dir) / checkpoint.removeprefix("s3://")
    try:
        files = json.loads((local / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"model {checkpoint} ({local}/manifest.json)"
    missing = [f for f in files if not (local / f).exists()]
    return f"model {checkpoint} ({local}/{missing[0]})" if missing else None


def _hub_piece(repo: str, subfolder: str = "", filename: str | None = None) -> str | None:
    from huggingface_hub import constants, hf_hub_download, snapshot_download

    try:
        if filename:
            hf_hub_download(repo, filename, local_files_only=True)
            return None
        root = snapshot_download(repo, allow_patterns=[f"{subfolder}/*"] if subfolder else None, local_files_only=True)
        if not subfolder or (Path(root) / subfolder).is_dir():
            return None
    except Exception:
        pass
    where = "/".join(x for x in (repo, subfolder or filename or "") if x)
    return f"Hugging Face model {where} (HF cache {constants.HF_HUB_CACHE})"


def _checkpoint_piece(checkpoint: str, cache_dir: str) -> str | None:
    if checkpoint.startswith("s3://"):
        return _s3_piece(checkpoint, cache_dir)
    if checkpoint.startswith("hf://"):
        parts = checkpoint[len("hf://") :].split("/")
        return _hub_piece("/".join(parts[:2]), "/".join(parts[2:]))
    return None if os.path.isdir(checkpoint) else _hub_piece(checkpoint)


def _vlm_pieces(s: Any) -> list[str]:
    """marker 2.x: the surya VLM runs in a server (vllm in docker, llama-server, or SURYA_INFERENCE_URL)."""
    if s.SURYA_INFERENCE_URL:
        url = s.SURYA_INFERENCE_URL.rstrip("/").removesuffix("/v1")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                return [] if reply.status == 200 else [f"inference server SURYA_INFERENCE_URL={url} (unhealthy)"]
        except Exception:
            return [f"inference server SURYA_INFERENCE_URL={url} (not reachable)"]
    try:
        from surya.inference import _autodetect_backend

        backend = _autodetect_backend()
    except Exception:
        backend = s.SURYA_INFERENCE_BACKEND or "llamacpp"
    or_url = "or set SURYA_INFERENCE_URL"
    if backend == "vllm":
        if shutil.which("vllm"):  # hpcmarker's tasks run `vllm serve` themselves (inference.py), from the HF cache
            return [p for p in [_checkpoint_piece(s.SURYA_MODEL_CHECKPOINT, s.MODEL_CACHE_DIR)] if p]
        pieces = [] if shutil.which("docker") else [f"vllm or docker (vllm backend; {or_url})"]
        repo_dir = "models--" + s.SURYA_MODEL_CHECKPOINT.replace("/", "--")
        hub = Path(os.path.expanduser(s.DOCKER_HF_CACHE_PATH), "hub", repo_dir)
        return pieces + ([] if hub.is_dir() else [f"VLM weights {s.SURYA_MODEL_CHECKPOINT} ({hub})"])
    binary = s.LLAMA_CPP_BINARY
    found = os.path.isfile(binary) or shutil.which(binary)
    pieces = [] if found else [f"{binary} binary (llamacpp backend; {or_url})"]
    local = (s.SURYA_GGUF_LOCAL_MODEL_PATH, s.SURYA_GGUF_LOCAL_MMPROJ_PATH)
    if all(local):
        return pieces + [f"GGUF file {p}" for p in local if not os.path.isfile(p)]
    for name in (s.SURYA_GGUF_MODEL_FILE, s.SURYA_GGUF_MMPROJ_FILE):
        pieces += [p for p in [_hub_piece(s.SURYA_GGUF_REPO, filename=name)] if p]
    return pieces


def missing_cache_pieces(server: bool = False) -> list[str]:
    """What marker would download at first use and is not on this node (font, weights, servers); `server`:
    hpcmarker's task starts the VLM server (runtime/inference.py): only its weights, in the HF cache."""
    version = _require_marker()
    from marker.settings import settings as marker_settings
    from surya.settings import settings as s

    missing = [] if os.path.isfile(marker_settings.FONT_PATH) else [f"font {marker_settings.FONT_PATH}"]
    if _series(version)[0] == 1:
        checkpoints = [
            s.LAYOUT_MODEL_CHECKPOINT,
            s.RECOGNITION_MODEL_CHECKPOINT,
            s.FOUNDATION_MODEL_CHECKPOINT,
            s.TABLE_REC_MODEL_CHECKPOINT,
            s.DETECTOR_MODEL_CHECKPOINT,
            s.OCR_ERROR_MODEL_CHECKPOINT,
        ]
    else:
        checkpoints = [s.FAST_LAYOUT_MODEL_CHECKPOINT, s.FAST_ORDER_MODEL_CHECKPOINT, s.OCR_ERROR_MODEL_CHECKPOINT]
    for checkpoint in dict.fromkeys(checkpoints):
        piece = _checkpoint_piece(checkpoint, s.MODEL_CACHE_DIR)
        missing += [piece] if piece else []
    if _series(version)[0] == 1:
        return missing
    vlm = _checkpoint_piece(s.SURYA_MODEL_CHECKPOINT, s.MODEL_CACHE_DIR) if server else None
    return missing + ([vlm] if vlm else []) if server else missing + _vlm_pieces(s)


class MarkerEngine:
    name = "marker"
    startup_seconds = 600.0  # loading the models (1.x) or reaching the inference server (2.x)

    @classmethod
    def check(cls, options: EngineOptions) -> None:
        _validate(options, _require_marker())

    @classmethod
    def check_node(cls, options: EngineOptions, server: bool = False) -> None:
        """The font, weights and (2.x) inference pieces are on this node (`server`: the task starts the VLM
        server itself, which needs only its weights here): EngineCacheMissing names those missing (when
        prefetch can fetch any), else EngineUnavailable; never a download."""
        version = _require_marker()
        missing = missing_cache_pieces(server=server)
        if not missing:
            return
        text = f"marker-pdf {version} is missing {describe_missing(missing)}"
        raise (EngineCacheMissing if any(is_cache_piece(piece) for piece in missing) else EngineUnavailable)(text)

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.version = _require_marker()
        self.config = build_marker_config(options)
        self.check_node(options)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # cache verified: never ask the hub (servers inherit it)
        import torch
        from marker.config.parser import ConfigParser
        from marker.models import create_model_dict

        torch.set_num_threads(max(1, options.threads))
        parser = ConfigParser(cli_options(options))
        try:
            self.models = create_model_dict()  # 1.x loads weights here; 2.x builds thin server clients
            self.converter = parser.get_converter_cls()(
                config=self.config,
                artifact_dict=self.models,
                processor_list=parser.get_processors(),
                renderer=parser.get_renderer(),
                llm_service=parser.get_llm_service(),
            )
        except Exception as exc:
            raise EngineUnavailable(
                f"marker-pdf {self.version} failed to load: {one_line(exc, with_type=True, empty='no detail')}"
            ) from None

    def convert(self, pdf: Path, pages: range | None, ocr: bool | None = None) -> ConvertedDocument:
        try:
            self._route(ocr)
            if pages is None:
                self.converter.config.pop("page_range", None)
            else:
                from marker.util import parse_range_str

                self.converter.config["page_range"] = parse_range_str(page_range_string(pages))
            clock = service_clock(getattr(self.converter, "llm_service", None))
            if clock:
                clock.take()  # a failed document's calls are not this one's
            rendered = self.converter(str(pdf))
            return document_from_rendered(rendered, self.options, clock.take() if clock else None)
        except (EngineError, MemoryError):  # MemoryError: the worker reports it and is replaced
            raise
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError":  # CUDA: this item only; free the cache for the next
                _release_gpu_cache()
            raise EngineError(one_line(exc, with_type=True, empty="no detail")) from None

    def _route(self, ocr: bool | None) -> None:
        """--force-ocr auto's decision for this item: force_ocr, and for the others disable_ocr only where
        --marker-config asks for it, in the config marker's provider and builders read per document, and on the
        processors that hold disable_ocr themselves (tables, equations)."""
        if ocr is not None:
            disable = not ocr and bool(self.options.extra_config.get("disable_ocr", False))
            self.converter.config.update(force_ocr=ocr, disable_ocr=disable)
            for processor in getattr(self.converter, "processor_list", None) or []:
                if hasattr(processor, "disable_ocr"):
                    processor.disable_ocr = disable

    def close(self) -> None:
        """marker 2.x: stop an inference server this process spawned (no-op on 1.x)."""
        from marker import models

        if hasattr(models, "shutdown_models"):
            models.shutdown_models(getattr(self, "models", {}))


def _release_gpu_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def document_from_rendered(rendered: Any, options: EngineOptions, llm_wait: float | None = None) -> ConvertedDocument:
    """marker's rendered output (Markdown, JSON, HTML or chunks) -> ConvertedDocument: the text and
    images marker's own save_output would write (images encoded the same way), its metadata, the
    text-layer flags of each page of the output where the format keeps page boundaries, and `llm_wait`
    (seconds marker's LLM calls were in flight) where the text engine puts it (metadata llm.seconds)."""
    from marker.output import convert_if_not_rgb, text_from_rendered
    from marker.settings import settings

    text, _ext, images = text_from_rendered(rendered)
    encoded: dict[str, bytes] = {}
    for name, image in images.items():
        buffer = io.BytesIO()
        convert_if_not_rgb(image).save(buffer, settings.OUTPUT_IMAGE_FORMAT)
        encoded[name] = buffer.getvalue()
    meta = json.loads(json.dumps(rendered.metadata, default=str))
    pages = page_texts(options.output_format, text, options.paginate)
    if pages is not None:
        meta["text_layer"] = check_pages(pages)
    if llm_wait is not None:  # the worker moves it to the commit log
        meta["llm"] = {"seconds": round(llm_wait, 3)}
    return ConvertedDocument(text=text, format=options.output_format, images=encoded, metadata=meta)
