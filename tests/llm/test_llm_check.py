"""The LLM service's capability check (llm/check.py) and the front's handling of reasoning models
(llm/reasoning.py), against the stand-in servers (tests/standin: `ollama` and `vllm`, with their modes
"rejects a JSON-schema format / response_format with a 400" and "answers in thinking / reasoning_content with
empty content"); and that the check sends what marker's own LLM services send."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standin.answering import answering_llm
from standin.harness import path_with_standin, seed_model, serve_in_thread

from hpc_marker.llm.check import IMAGE_WEBP, PROMPT, answer_problem, marker_request
from hpc_marker.llm.client import ServiceUnfit, forget_unfit, read_unfit, wait_for_service
from hpc_marker.llm.reasoning import answer_in, moved_answer
from hpc_marker.llm.refine import refine_pages
from hpc_marker.llm.service import ServiceError, serve_llm
from hpc_marker.llm.settings import LlmPaths, LlmSettings
from hpc_marker.manage.rounds import incurable
from hpc_marker.runstate.stops import LLM_UNFIT, TaskStop

MODELS = {"ollama": "tiny:1b", "vllm": "org/tiny-instruct"}
REJECT = {"ollama": "STANDIN_OLLAMA_REJECT_SCHEMA", "vllm": "STANDIN_VLLM_REJECT_JSON_SCHEMA"}
REASONING = {"ollama": "STANDIN_OLLAMA_THINKING", "vllm": "STANDIN_VLLM_REASONING"}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_with_standin())
    seed_model(tmp_path / "models", MODELS["ollama"])
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


def settings(tmp_path, server: str, check: str = "marker") -> LlmSettings:
    return LlmSettings(
        model=MODELS[server],
        server=server,
        bind_host="127.0.0.1",
        models_dir=str(tmp_path / "models"),
        ready_timeout_s=20,
        load_timeout_s=20,
        request_timeout_s=20,
        metrics_interval_s=0.2,
        check=check,
    )


# ---- pure -------------------------------------------------------------------------------------------------


def test_a_reasoning_answer_is_moved_into_the_empty_content_and_nothing_else_is_touched():
    answer = {"markdown": "Invoice 42"}
    generate = {"model": "m", "response": "", "thinking": json.dumps(answer), "done": True}
    assert json.loads(json.loads(moved_answer(json.dumps(generate).encode()))["response"]) == answer
    chat = {"message": {"role": "assistant", "content": "", "thinking": "Okay, the page. " + json.dumps(answer)}}
    assert json.loads(json.loads(moved_answer(json.dumps(chat).encode()))["message"]["content"]) == answer
    for key in ("reasoning_content", "reasoning"):
        openai = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, key: "Plain text."}}]}
        assert (
            json.loads(moved_answer(json.dumps(openai).encode()))["choices"][0]["message"]["content"] == "Plain text."
        )
    kept = {"choices": [{"message": {"content": "the answer", "reasoning_content": "thoughts"}}]}
    assert moved_answer(json.dumps(kept).encode()) is None  # content there: left alone
    assert moved_answer(b'{"response": "", "done": true}') is None  # nothing to move (a model load)
    assert moved_answer(b"not json, but thinking") is None
    assert answer_in('I think {"a": 1} fits. {"b": {"c": 2}}') == '{"b": {"c": 2}}'
    assert answer_in("no object here") == "no object here"


def test_what_marker_cannot_use_is_named():
    assert answer_problem('{"markdown": "x"}') is None
    assert "empty" in answer_problem("  ")
    assert "not JSON" in answer_problem("Here is the markdown: x")
    assert "lacks the schema's string field" in answer_problem('{"text": "x"}')


def test_a_failed_check_is_a_cause_no_round_cures():
    stop = TaskStop(0, LLM_UNFIT, "vllm ... cannot answer")
    assert incurable({LLM_UNFIT: [0]}, {0: stop}) == LLM_UNFIT


# ---- against the stand-ins ------------------------------------------------------------------------------


def serve(run_dir, tmp_path, server: str, check: str = "marker"):
    LlmPaths(run_dir).save_settings(settings(tmp_path, server, check))
    return serve_in_thread(serve_llm, str(run_dir))


@pytest.mark.parametrize("server", ["ollama", "vllm"])
def test_a_server_that_rejects_the_json_schema_ends_the_waiting_tasks_at_once(run_dir, tmp_path, monkeypatch, server):
    monkeypatch.setenv(REJECT[server], "1")
    started = time.monotonic()
    thread, stop, errors = serve(run_dir, tmp_path, server)
    try:
        with pytest.raises(ServiceUnfit) as unfit:
            wait_for_service(run_dir, timeout_s=120, poll_s=0.1)  # the task's wait: ended by the check, not the clock
        assert time.monotonic() - started < 60
    finally:
        stop.set()
        thread.join(timeout=30)
    line = str(unfit.value)
    assert "\n" not in line and line == read_unfit(run_dir)
    assert f"{server} " in line and f"with model {MODELS[server]}" in line  # the server and the model
    assert "answered HTTP 400" in line
    assert ("Ollama 0.5" if server == "ollama" else "structured outputs") in line  # what to change
    assert "--llm-check off" in line
    assert len(errors) == 1 and isinstance(errors[0], ServiceError) and str(errors[0]) == line  # the job fails
    paths = LlmPaths(run_dir)
    assert not paths.endpoint.exists() and not paths.secret.exists()  # never published; cleaned up
    forget_unfit(run_dir, 1)  # a resubmission: the next round's tasks wait for the new service
    assert read_unfit(run_dir) is None


def test_a_model_that_cannot_take_images_is_told_so(run_dir, tmp_path, monkeypatch):
    """The check asks once more without the image: a 400 that goes away without it names the image."""
    monkeypatch.setenv("STANDIN_VLLM_REJECT_IMAGES", "1")
    thread, stop, _ = serve(run_dir, tmp_path, "vllm")
    try:
        with pytest.raises(ServiceUnfit, match="choose a model that takes images"):
            wait_for_service(run_dir, timeout_s=120, poll_s=0.1)
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.mark.parametrize("server", ["ollama", "vllm"])
def test_a_reasoning_model_passes_the_check_and_its_refinements_are_done_not_degraded(
    run_dir, tmp_path, monkeypatch, server
):
    monkeypatch.setenv(REASONING[server], "1")
    thread, stop, errors = serve(run_dir, tmp_path, server)
    try:
        endpoint = wait_for_service(run_dir, timeout_s=60, poll_s=0.1)
        pages = refine_pages(["first page text", "second page"], endpoint, task=3, timeout_s=20)
        stats = endpoint.task_stats(3)
        total = endpoint.stats()["total"]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == []
    assert [p.text for p in pages] == ["FIRST PAGE TEXT", "SECOND PAGE"]
    assert not any(p.degraded for p in pages)
    assert stats["answers_moved"] == 2 and stats["failures"] == 0
    assert total["answers_moved"] == 3  # the check's answer too
    assert read_unfit(run_dir) is None


def test_the_text_engines_check_is_a_chat_that_a_schema_rejecting_server_passes(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(REJECT["vllm"], "1")
    thread, stop, errors = serve(run_dir, tmp_path, "vllm", check="chat")
    try:
        assert wait_for_service(run_dir, timeout_s=60, poll_s=0.1).model == MODELS["vllm"]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == []


# ---- marker's own services ------------------------------------------------------------------------------


def _without_images(body: dict) -> dict:
    body = json.loads(json.dumps(body))
    if "images" in body:
        body["images"] = ["<image>" for _ in body["images"]]
    for message in body.get("messages", []):
        for part in message["content"]:
            if part.get("type") == "image_url":
                assert part["image_url"]["url"].startswith("data:image/webp;base64,")
                part["image_url"]["url"] = "<image>"
    return body


@pytest.mark.marker
def test_the_check_sends_what_markers_own_llm_services_send():
    """marker's OllamaService and OpenAIService (the installed marker-pdf) with its handwriting schema and a WebP
    image send the same path and body as marker_request, but for the image's bytes."""
    from marker.processors.llm.llm_handwriting import HandwritingSchema
    from marker.services.ollama import OllamaService
    from marker.services.openai import OpenAIService
    from PIL import Image

    image = Image.open(__import__("io").BytesIO(base64.b64decode(IMAGE_WEBP)))
    assert image.format == "WEBP"
    with answering_llm({"markdown": "x"}) as (url, seen):
        OllamaService({"ollama_base_url": url, "ollama_model": "m"})(PROMPT, image, None, HandwritingSchema)
        key = {"openai_base_url": url + "/v1", "openai_model": "m", "openai_api_key": "k"}
        OpenAIService(key)(PROMPT, image, None, HandwritingSchema)
    for (path, body), server_kind in zip(seen, ("ollama", "vllm"), strict=True):
        ours_path, ours = marker_request(server_kind, "m")
        assert path.endswith(ours_path)
        assert _without_images(body) == _without_images(ours)


@pytest.mark.parametrize(
    ("engine", "choice", "kind"),
    [
        ("marker", "auto", "marker"),
        ("text", "auto", "chat"),
        ("benchmark", "auto", "chat"),
        ("text", "marker", "marker"),
        ("marker", "off", "off"),
    ],
)
def test_the_run_asks_its_service_for_the_check_its_engine_needs(tmp_path, engine, choice, kind):
    from hpc_marker.runstate.layout import RunPaths
    from hpc_marker.submission.launch import _write_llm_settings
    from hpc_marker.submission.request import LlmRequest

    llm = LlmRequest(model="m", gpus=1, parallel=1, wait_timeout_s=1, cpus=1, check=choice)
    _write_llm_settings(RunPaths(tmp_path), llm, engine)
    assert LlmPaths(tmp_path).load_settings().check == kind
    assert llm.record().check == choice  # run.json keeps the choice (a follow-up run asks the same)
