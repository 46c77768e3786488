"""The marker engine's LLM wait at marker-pdf's real boundary (marker 1.10.x and 2.0.x, no weights): marker's own
LLM service classes, resolved by marker's converter from the class path the engine configures, time each call
(engines/markerservices.py); the document's wait is the union of its calls, as the worker hands it to the commit
log. The LLM is a local HTTP server that answers each request after DELAY seconds."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from standin.answering import answering_llm
from test_marker_engine import _NoModels, build_text_document, make_pdf

from hpc_marker.engines import marker as engine_mod
from hpc_marker.engines.base import EngineOptions
from hpc_marker.llm.client import Endpoint, LlmAccess
from hpc_marker.runtime import worker

# each answer's delay; the pause between the burst of calls and the last one; what the clock may add to the two
# answers' time (marker's service makes a client per call: 1.7 s of it once on the loaded CI machine, at DELAY 0.6).
# SLACK stays below both what the sum would add (2 x DELAY) and the pause (GAP), so either would still fail.
DELAY, GAP, SLACK = 2.0, 4.0, 3.5


@pytest.fixture
def slow_llm():
    """marker's LLM, answering each request after DELAY: its URL, and the requests it got."""
    with answering_llm({"corrected_markdown": "x"}, delay_s=DELAY) as (url, seen):
        yield url, seen


def _engine(url: str, server: str, monkeypatch):
    """A MarkerEngine whose converter is marker's own PdfConverter, built as the engine builds it (its LLM service
    from the class path marker's ConfigParser gives), but without models (no weights here)."""
    import marker.converters
    from marker.config.parser import ConfigParser
    from marker.converters.pdf import PdfConverter

    monkeypatch.setattr(marker.converters, "download_font", lambda: None)
    endpoint = Endpoint(url=url, model="m", secret="s3cr3t", server=server)
    options = EngineOptions(llm=LlmAccess(endpoint, task="1.7", max_retries=0))
    engine = object.__new__(engine_mod.MarkerEngine)
    engine.options = options
    engine.converter = PdfConverter(
        artifact_dict=_NoModels(),
        config=engine_mod.build_marker_config(options),
        processor_list=None,
        llm_service=ConfigParser(engine_mod.cli_options(options)).get_llm_service(),
    )
    return engine


@pytest.mark.marker
@pytest.mark.parametrize("server", ["ollama", "vllm"])
def test_markers_llm_calls_are_the_documents_llm_wait(slow_llm, server, monkeypatch, tmp_path):
    """Three calls at once (as marker's LLM processors make them from their thread pool), a pause, one more: the
    document's LLM wait is two answers' time (the union), not four (the sum), and not the pause; it reaches the
    worker's result (the commit log's llm_s) and leaves the output's metadata. The requests are marker's own."""
    from marker.processors.llm.llm_table import LLMTableProcessor
    from marker.services.ollama import OllamaService
    from marker.services.openai import OpenAIService
    from pydantic import BaseModel

    class Answer(BaseModel):
        corrected_markdown: str

    url, seen = slow_llm
    engine = _engine(url, server, monkeypatch)
    service = engine.converter.llm_service
    own = {"ollama": OllamaService, "vllm": OpenAIService}[server]
    assert isinstance(service, own) and type(service) is not own  # marker's class, with the clock
    assert LLMTableProcessor(service, engine.converter.config).llm_service is service
    assert own(engine.converter.config)("Fix.", None, None, Answer) == {"corrected_markdown": "x"}

    def build_document(filepath):  # marker's document, and its LLM processors' calls
        with ThreadPoolExecutor(max_workers=3) as pool:
            answers = list(pool.map(lambda _: service("Fix.", None, None, Answer), range(3)))
        time.sleep(GAP)
        answers.append(service("Fix.", None, None, Answer))
        assert answers == [{"corrected_markdown": "x"}] * 4
        return build_text_document(filepath, engine.converter.config)

    service("Fix.", None, None, Answer)  # a call before the document (a failed one's): not its wait
    monkeypatch.setattr(engine.converter, "build_document", build_document)
    monkeypatch.setattr(worker, "_ENGINE", engine)
    monkeypatch.setattr(worker, "_ENGINE_SPEC", ("marker", {"output_settings": None}))
    pdf = make_pdf(tmp_path / "doc.pdf", pages=2)
    result = worker.convert_to_staging(str(pdf), 0, 2, str(tmp_path / "staging"), "doc.md", "doc")
    assert 2 * DELAY <= result.llm_seconds < 2 * DELAY + SLACK, result.llm_seconds  # summed: 4 x; the pause: + GAP
    bodies = [body for _path, body in seen]
    assert len(bodies) == 6 and all(body == bodies[0] for body in bodies)  # the same request as marker's own class
    staged = next((tmp_path / "staging").rglob("*.json"))
    assert "llm" not in json.loads(staged.read_text()) and "Page 1 hello marker" in result_text(tmp_path)


def result_text(tmp_path) -> str:
    return "".join(path.read_text() for path in (tmp_path / "staging").rglob("*.md"))


@pytest.mark.marker
def test_the_timed_services_check_their_settings_like_markers():
    """marker checks a service's required settings by its class's own annotations: the timed OpenAIService
    refuses a missing API key as marker's own does."""
    from marker.services.openai import OpenAIService

    from hpc_marker.engines.markerservices import TimedOpenAIService

    for cls in (OpenAIService, TimedOpenAIService):
        with pytest.raises(AssertionError, match="openai_api_key"):
            cls({"openai_base_url": "http://127.0.0.1:9/v1"})
