"""marker's own LLM service classes with a clock (llmtiming.py): what the marker engine names as marker's
`llm_service` (by class path, the way marker resolves it in 1.10.x and 2.0.x), so each document's LLM wait is
measured. Imports marker: only marker's converter imports this module, by that path."""

from __future__ import annotations

from marker.services.ollama import OllamaService
from marker.services.openai import OpenAIService

from hpc_marker.engines.llmtiming import TimedService


class TimedOllamaService(TimedService, OllamaService):
    # marker checks a service's required settings by its class's own annotations (util.verify_config_keys)
    __annotations__ = dict(OllamaService.__annotations__)


class TimedOpenAIService(TimedService, OpenAIService):
    __annotations__ = dict(OpenAIService.__annotations__)
