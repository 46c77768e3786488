"""marker's options from hpcmarker's: EngineOptions (and a work item's pages) as the keyword arguments marker's
click CLI hands its ConfigParser, the keys hpcmarker sets itself (never from --marker-config), and the settings of
marker's LLM service for the run's service with the run's concurrency budget. Pure; no marker import (marker.py
hands these to marker's ConfigParser).
"""

from __future__ import annotations

from typing import Any

from hpc_marker.engines.base import EngineError, EngineOptions

# Keys hpcmarker sets itself (from EngineOptions or per work item) or that write files.
RESERVED = {
    "output_format": "use the output_format option (--output-format)",
    "disable_image_extraction": "use the images option (--images/--no-images)",
    "page_range": "hpcmarker sets it per work item",
    "paginate_output": "use the paginate option",
    "force_ocr": "use the force_ocr option",
    "output_dir": "engines never write files",
    "config_json": "pass the settings themselves",
    "debug": "engines never write files",
}
# marker's own service class for each LLM server of a run (--llm-server), with a clock (markerservices.py)
_TIMED = "hpc_marker.engines.markerservices.Timed"
LLM_SERVICES = {"ollama": _TIMED + "OllamaService", "vllm": _TIMED + "OpenAIService"}


def page_range_string(pages: range) -> str:
    """Our 0-based `range` in marker's `--page_range` syntax ("0,5-10,20"; 0-based, ends inclusive)."""
    if len(pages) == 0:
        raise EngineError("empty page range")
    if pages.step == 1:
        return str(pages[0]) if len(pages) == 1 else f"{pages[0]}-{pages[-1]}"
    return ",".join(str(i) for i in pages)


def cli_options(options: EngineOptions, pages: range | None = None) -> dict[str, Any]:
    """The kwargs marker's click CLI would hand to ConfigParser for these options."""
    cli: dict[str, Any] = {
        "output_format": options.output_format,
        "paginate_output": options.paginate,
        "force_ocr": options.force_ocr,
        "disable_image_extraction": not options.images,
    }
    if pages is not None:
        cli["page_range"] = page_range_string(pages)
    if options.llm:  # the run's LLM service, through its authenticating front (or the task's relay)
        cli["use_llm"] = True
        cli["llm_service"] = LLM_SERVICES[options.llm.endpoint.server]
    cli.update(options.extra_config)
    return cli


def llm_settings(options: EngineOptions) -> dict[str, Any]:
    """marker's LLM service settings for the run's service: OllamaService (base URL with the secret and
    the worker's task path) or OpenAIService for vLLM (base URL with the task path, the secret as the
    API key); and the run's concurrency budget (llm/budget.py): max_concurrency, timeout, max_retries,
    unless --marker-config sets them."""
    if not options.llm:
        return {}
    llm = options.llm
    endpoint = llm.endpoint
    if endpoint.server == "vllm":
        settings = {
            "openai_base_url": endpoint.openai_base_url(llm.task),
            "openai_model": endpoint.model,
            "openai_api_key": endpoint.secret,
        }
    else:
        settings = {"ollama_base_url": endpoint.base_url(llm.task), "ollama_model": endpoint.model}
    budget = {"max_concurrency": llm.max_concurrency, "timeout": llm.timeout_s, "max_retries": llm.max_retries}
    settings.update(
        {key: int(value) for key, value in budget.items() if value is not None and key not in options.extra_config}
    )
    return settings
