"""MarkerEngine at marker-pdf's real boundary, without model weights (marker 1.10.x and 2.0.x).

Tests marked `marker` skip when marker-pdf is not installed; the install-hint and page-range
tests run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

import pytest

from hpc_marker.engines import check_engine, create_engine
from hpc_marker.engines import marker as engine_mod
from hpc_marker.engines.base import EngineCacheMissing, EngineError, EngineOptions, EngineUnavailable, page_marker
from hpc_marker.engines.cachepieces import PREFETCH_COMMAND
from hpc_marker.llm.client import Endpoint, LlmAccess

REPO = Path(__file__).resolve().parents[2]


def make_pdf(path: Path, pages: int = 3) -> Path:
    """A small text PDF (Helvetica, one line per page), written by hand: no PDF library needed."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for i in range(pages):
        text = f"BT /F1 18 Tf 72 720 Td (Page {i} hello marker) Tj ET"
        objs.append(f"<< /Length {len(text)} >>\nstream\n{text}\nendstream")
        objs.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objs)} 0 R >>"
        )
        kids.append(len(objs))
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {pages} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def build_text_document(filepath: str, config: dict):
    """What marker's build_document does minus the models: pdftext lines straight into pages."""
    from marker.builders.document import DocumentBuilder
    from marker.providers.pdf import PdfProvider

    provider = PdfProvider(filepath, config)
    document = DocumentBuilder(config).build_document(provider)
    for page in document.pages:
        for provided in provider.page_lines[page.page_id]:
            line = page.add_full_block(provided.line)
            for span in provided.spans:
                line.add_structure(page.add_full_block(span))
            page.add_structure(line)
    return document


@pytest.fixture
def marker_pkg():
    import marker  # the tests that use it are marked `marker`: the gate in conftest skips or fails them

    return marker


@pytest.fixture
def empty_caches(tmp_path, monkeypatch, marker_pkg):
    """Point every cache marker/surya read at an empty temp dir (as the env vars would)."""
    import huggingface_hub.constants
    from marker.settings import settings as marker_settings
    from surya.settings import settings as surya_settings

    monkeypatch.setattr(marker_settings, "FONT_PATH", str(tmp_path / "fonts" / "GoNotoCurrent-Regular.ttf"))
    monkeypatch.setattr(surya_settings, "MODEL_CACHE_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    if hasattr(surya_settings, "SURYA_INFERENCE_URL"):  # marker 2.x
        monkeypatch.setattr(surya_settings, "SURYA_INFERENCE_URL", None)
        monkeypatch.setattr(surya_settings, "SURYA_INFERENCE_BACKEND", "llamacpp")
        monkeypatch.setattr(surya_settings, "LLAMA_CPP_BINARY", str(tmp_path / "bin" / "llama-server"))
    return tmp_path


# --- runs without marker -------------------------------------------------------------


def test_check_without_marker_gives_install_hint(monkeypatch):
    real_version = metadata.version

    def version(name: str) -> str:
        if name == "marker-pdf":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(engine_mod.metadata, "version", version)
    for name in ("marker", "marker.config", "marker.config.crawler", "surya"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of marker now fails
    hint = "engine 'marker' needs marker-pdf: pip install \"hpc-marker[marker]\""
    for call in (
        lambda: check_engine("marker", EngineOptions()),
        lambda: create_engine("marker", EngineOptions(force_ocr=True)),
        engine_mod.missing_cache_pieces,
    ):
        with pytest.raises(EngineUnavailable) as info:
            call()
        assert str(info.value) == hint


def test_module_imports_without_marker():
    code = "import sys; sys.modules['marker'] = sys.modules['surya'] = None; import hpc_marker.engines.marker"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_page_range_string_matches_marker_syntax():
    assert engine_mod.page_range_string(range(3, 7)) == "3-6"
    assert engine_mod.page_range_string(range(5, 6)) == "5"
    assert engine_mod.page_range_string(range(0, 6, 2)) == "0,2,4"
    with pytest.raises(EngineError):
        engine_mod.page_range_string(range(2, 2))


# --- marker installed ----------------------------------------------------------------


@pytest.mark.marker
def test_options_match_what_marker_cli_makes(marker_pkg):
    """Our config equals what `marker_single x.pdf --paginate_output --force_ocr --page_range 1-2` builds."""
    import click
    from click.testing import CliRunner
    from marker.config.parser import ConfigParser
    from marker.config.printer import CustomClickPrinter

    captured: dict = {}

    @click.command(cls=CustomClickPrinter)
    @click.argument("fpath")
    @ConfigParser.common_options
    def cli(fpath, **kwargs):
        captured.update(ConfigParser(kwargs).generate_config_dict())

    result = CliRunner().invoke(cli, ["x.pdf", "--paginate_output", "--force_ocr", "--page_range", "1-2"])
    assert result.exit_code == 0, result.output
    ours = engine_mod.build_marker_config(EngineOptions(paginate=True, force_ocr=True), range(1, 3))
    for key in ("output_format", "paginate_output", "force_ocr", "page_range"):
        assert ours[key] == captured[key], key
    assert ours["page_range"] == [1, 2]


@pytest.mark.marker
def test_config_is_applied_by_marker_classes(marker_pkg, tmp_path):
    from marker.config.crawler import crawler
    from marker.providers.pdf import PdfProvider
    from marker.renderers.markdown import MarkdownRenderer

    pdf = make_pdf(tmp_path / "doc.pdf", pages=4)
    extra = {"extract_images": False, "MarkdownRenderer_page_separator": "=" * 10}
    config = engine_mod.build_marker_config(
        EngineOptions(paginate=True, force_ocr=True, extra_config=extra), range(1, 3)
    )
    assert set(config) - {"output_format"} <= crawler.attr_set  # every key is one marker applies
    assert config["extract_images"] is False  # falsy values survive (1.10's CLI drops them)
    provider = PdfProvider(str(pdf), config)
    assert list(provider.page_range) == [1, 2] and provider.force_ocr is True
    renderer = MarkdownRenderer(config)
    assert renderer.paginate_output is True and renderer.page_separator == "=" * 10
    assert renderer.extract_images is False


class _NoModels(dict):
    """An artifact dict that hands every builder and processor None for its model (none is called here)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> None:
        return None


@pytest.mark.marker
@pytest.mark.parametrize("extra", [{}, {"disable_ocr": True}], ids=["plain", "disable_ocr"])
def test_force_ocr_auto_sets_each_items_decision_where_marker_reads_it(marker_pkg, tmp_path, monkeypatch, extra):
    """--force-ocr auto: an item that goes to OCR gets force_ocr (and never disable_ocr); any other gets neither,
    or disable_ocr where --marker-config asks for it, in what marker's provider, builders and processors read."""
    import marker.converters
    from marker.builders.line import LineBuilder
    from marker.converters.pdf import PdfConverter
    from marker.providers.pdf import PdfProvider

    monkeypatch.setattr(marker.converters, "download_font", lambda: None)
    options = EngineOptions(ocr_auto=True, extra_config=extra)
    engine = object.__new__(engine_mod.MarkerEngine)  # its converter without models (no weights here)
    engine.options = options
    engine.converter = PdfConverter(artifact_dict=_NoModels(), config=engine_mod.build_marker_config(options))
    pdf = make_pdf(tmp_path / "doc.pdf", pages=2)
    for ocr in (True, False, True):
        engine._route(ocr)
        disabled = not ocr and bool(extra)
        assert PdfProvider(str(pdf), engine.converter.config).force_ocr is ocr
        assert engine.converter.resolve_dependencies(LineBuilder).disable_ocr is disabled
        holders = [p for p in engine.converter.processor_list if hasattr(p, "disable_ocr")]  # tables (2.x: equations)
        assert holders and all(p.disable_ocr is disabled for p in holders)


@pytest.mark.marker
def test_the_installed_marker_takes_no_languages(marker_pkg):
    """Why hpcmarker has no --languages (issue 19): marker-pdf 1.10 and 2.0 have no such setting (it went in 1.7:
    surya detects the languages); in --marker-config it is an unknown key like any other."""
    from marker.config.crawler import crawler

    keys, cli = engine_mod.marker_config_keys()
    assert "languages" not in crawler.attr_set and "languages" not in keys | set(cli)
    with pytest.raises(EngineUnavailable, match=r"unknown marker setting 'languages' for marker-pdf \d"):
        engine_mod.MarkerEngine.check(EngineOptions(extra_config={"languages": "de,en"}))


@pytest.mark.marker
@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"paginate_outptu": True}, "paginate_outptu"),
        ({"no_such_setting_at_all": 1}, "no_such_setting_at_all"),
        ({"page_range": "0-3"}, "page_range"),
        ({"output_format": "json"}, "output_format"),
        ({"mode": "turbo"}, "mode"),  # 1.10: unknown key; 2.0: not one of balanced/fast
    ],
)
def test_bad_extra_config_is_unavailable(marker_pkg, extra, named):
    with pytest.raises(EngineUnavailable) as info:
        check_engine("marker", EngineOptions(extra_config=extra))
    message = str(info.value)
    assert repr(named) in message and "\n" not in message
    if named == "paginate_outptu":
        assert metadata.version("marker-pdf") in message and "paginate_output" in message


@pytest.mark.marker
def test_valid_extra_config_passes_and_follows_the_version(marker_pkg):
    check_engine(
        "marker",
        EngineOptions(extra_config={"extract_images": False, "MarkdownRenderer_html_tables_in_markdown": True}),
    )
    v1 = metadata.version("marker-pdf").startswith("1.")
    valid, gone = ("row_split_threshold", "ocr_full_page") if v1 else ("ocr_full_page", "row_split_threshold")
    check_engine("marker", EngineOptions(extra_config={valid: 0.5}))
    with pytest.raises(EngineUnavailable, match=gone):
        check_engine("marker", EngineOptions(extra_config={gone: 0.5}))


@pytest.mark.marker
def test_missing_cache_raises_fast_and_names_piece(empty_caches):
    engine_mod.MarkerEngine.check(EngineOptions())  # imports marker before the clock starts
    start = time.monotonic()
    with pytest.raises(EngineUnavailable) as info:
        create_engine("marker", EngineOptions())
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert isinstance(info.value, EngineCacheMissing)  # prefetch can fetch it: the task says so (issue 19)
    assert "\n" not in message and len(message) < 400  # names the pieces, not every path (doctor does)
    assert "font GoNotoCurrent-Regular.ttf" in message
    if metadata.version("marker-pdf").startswith("1."):
        assert "models layout, text_recognition" in message
    else:
        assert "surya_layout2" in message and "ocr_error_detection" in message
        assert "llama-server" in message
    doctor_view = engine_mod.missing_cache_pieces()  # the paths stay in the long form doctor shows
    assert str(empty_caches / "fonts" / "GoNotoCurrent-Regular.ttf") in "; ".join(doctor_view)


@pytest.mark.marker
@pytest.mark.slow
def test_local_run_without_weights_stops_at_once_and_fails_no_item(tmp_path, monkeypatch, marker_pkg):
    """Issue 19: marker with no font or weights on the node (`--inference-server off`): the task stops before
    its first item, the run is incomplete (exit 4) with one line naming what is missing and prefetch as the
    fix; no item is failed or counted toward poison."""
    from runkit import invoke, manifest_records

    from hpc_marker.runstate.index import resolve_run
    from hpc_marker.runstate.progress import read_commits
    from hpc_marker.runstate.stops import ENGINE_CACHE, read_stops

    for name, value in (
        ("MODEL_CACHE_DIR", "models"),
        ("FONT_PATH", "fonts/GoNotoCurrent-Regular.ttf"),
        ("HF_HOME", "hf"),
        ("HF_HUB_CACHE", "hf/hub"),
    ):
        monkeypatch.setenv(name, str(tmp_path / "empty" / value))
    monkeypatch.setenv("SURYA_INFERENCE_BACKEND", "llamacpp")  # 2.x: no GPU here; 1.x ignores it
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    for i in range(3):
        make_pdf(pdfs / f"doc{i}.pdf", pages=2)
    result = invoke(
        "submit",
        "--pdfs",
        pdfs,
        "--out",
        tmp_path / "out",
        "--engine",
        "marker",
        "--inference-server",
        "off",
        "--executor",
        "local",
    )
    assert result.exit_code == 4, result.output
    paths = resolve_run(None)
    assert manifest_records(paths) == [] and read_commits(paths.progress).empty
    assert {stop.cause for stop in read_stops(paths.progress).values()} == {ENGINE_CACHE}
    reasons = [line for line in result.output.splitlines() if line.startswith("  1 task (0)")]
    assert len(reasons) == 1 and "font GoNotoCurrent-Regular.ttf" in reasons[0] and len(reasons[0]) < 600, reasons
    assert f"next: {PREFETCH_COMMAND} && hpcmarker resume {paths.root.name}" in result.output
    assert "failed" not in result.output


@pytest.mark.marker
def test_cache_env_vars_move_caches(marker_pkg, tmp_path):
    """FONT_PATH, MODEL_CACHE_DIR and HF_HOME are read at import; no download is attempted."""
    script = textwrap.dedent(
        """
        import json, time
        import marker.config.crawler, marker.settings, surya.settings
        from hpc_marker.engines.base import EngineOptions, EngineUnavailable
        from hpc_marker.engines.marker import MarkerEngine, missing_cache_pieces
        start = time.monotonic()
        try:
            MarkerEngine(EngineOptions())
            print(json.dumps({"error": None}))
        except EngineUnavailable as exc:
            print(json.dumps({"error": str(exc), "seconds": time.monotonic() - start,
                              "pieces": "; ".join(missing_cache_pieces())}))
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FONT_PATH": str(tmp_path / "f" / "font.ttf"),
        "MODEL_CACHE_DIR": str(tmp_path / "models"),
        "HF_HOME": str(tmp_path / "hf"),
        "SURYA_INFERENCE_BACKEND": "llamacpp",
        "LLAMA_CPP_BINARY": str(tmp_path / "none"),
    }
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["error"] and result["seconds"] < 5
    assert str(tmp_path / "f" / "font.ttf") in result["pieces"]  # the long form (doctor's) names the paths
    assert str(tmp_path / "models") in result["pieces"]
    if not metadata.version("marker-pdf").startswith("1."):
        assert str(tmp_path / "hf" / "hub") in result["pieces"]  # HF_HOME moves the rf-detr/GGUF cache
    assert "Retrying" not in run.stderr and "Downloading" not in run.stderr


def _fake_hub(hub: Path, repo: str, files: list[str]) -> None:
    root = hub / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text("0" * 40)
    for name in files:
        path = root / "snapshots" / ("0" * 40) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.mark.marker
def test_complete_cache_is_accepted_and_a_hole_is_named(empty_caches, monkeypatch):
    from surya.settings import settings as s

    Path(empty_caches / "fonts").mkdir()
    (empty_caches / "fonts" / "GoNotoCurrent-Regular.ttf").write_bytes(b"font")
    if hasattr(s, "SURYA_INFERENCE_URL"):  # 2.x
        checkpoints = [s.OCR_ERROR_MODEL_CHECKPOINT]
        _fake_hub(empty_caches / "hf", "datalab-to/surya_layout2", ["config.json", "order/config.json"])
        _fake_hub(empty_caches / "hf", s.SURYA_GGUF_REPO, [s.SURYA_GGUF_MODEL_FILE, s.SURYA_GGUF_MMPROJ_FILE])
        (empty_caches / "bin").mkdir()
        (empty_caches / "bin" / "llama-server").write_text("#!/bin/sh\n")
    else:
        checkpoints = [
            s.LAYOUT_MODEL_CHECKPOINT,
            s.RECOGNITION_MODEL_CHECKPOINT,
            s.FOUNDATION_MODEL_CHECKPOINT,
            s.TABLE_REC_MODEL_CHECKPOINT,
            s.DETECTOR_MODEL_CHECKPOINT,
            s.OCR_ERROR_MODEL_CHECKPOINT,
        ]
    for checkpoint in checkpoints:
        local = empty_caches / "models" / checkpoint.removeprefix("s3://")
        local.mkdir(parents=True, exist_ok=True)
        (local / "manifest.json").write_text(json.dumps({"files": ["config.json", "model.safetensors"]}))
        (local / "config.json").write_text("{}")
        (local / "model.safetensors").write_bytes(b"w")
    assert engine_mod.missing_cache_pieces() == []
    hole = empty_caches / "models" / checkpoints[-1].removeprefix("s3://") / "model.safetensors"
    hole.unlink()
    assert engine_mod.missing_cache_pieces() == [f"model {checkpoints[-1]} ({hole})"]


@pytest.mark.marker
def test_pagination_separator_is_markers(marker_pkg, tmp_path):
    """marker's own MarkdownRenderer on a page-ranged document writes page_marker(page_id)."""
    from marker.renderers.markdown import MarkdownRenderer

    pdf = make_pdf(tmp_path / "doc.pdf", pages=4)
    config = engine_mod.build_marker_config(EngineOptions(paginate=True), range(1, 3))
    markdown = MarkdownRenderer(config)(build_text_document(str(pdf), config)).markdown
    assert markdown == page_marker(1) + "Page 1 hello marker" + page_marker(2) + "Page 2 hello marker"


@pytest.mark.marker
def test_engine_converts_through_marker_converter(empty_caches, monkeypatch, tmp_path):
    """Full __init__ + convert with marker's real PdfConverter and renderer; only the models are fakes."""
    import marker.models
    import torch
    from marker.renderers.markdown import MarkdownOutput
    from PIL import Image

    monkeypatch.setattr(engine_mod, "missing_cache_pieces", lambda **_: [])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # __init__ sets it (setdefault); keep it test-local
    (empty_caches / "fonts").mkdir()
    (empty_caches / "fonts" / "GoNotoCurrent-Regular.ttf").write_bytes(b"font")
    fake_models = dict.fromkeys(
        [
            "layout_model",
            "recognition_model",
            "table_rec_model",
            "detection_model",
            "ocr_error_model",
            "fast_layout_model",
            "inference_manager",
        ],
        object(),
    )
    monkeypatch.setattr(marker.models, "create_model_dict", lambda: dict(fake_models))
    threads = torch.get_num_threads()
    try:
        engine = create_engine("marker", EngineOptions(paginate=True, threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(engine.converter, "build_document", lambda fp: build_text_document(fp, engine.converter.config))
    pdf = make_pdf(tmp_path / "doc.pdf", pages=4)
    doc = engine.convert(pdf, range(2, 4))
    assert doc.text == page_marker(2) + "Page 2 hello marker" + page_marker(3) + "Page 3 hello marker"
    assert [p["page_id"] for p in doc.metadata["page_stats"]] == [2, 3]
    json.dumps(doc.metadata)
    assert engine.convert(pdf, None).text.count("hello marker") == 4

    rendered = MarkdownOutput(
        markdown="![](_page_0_Picture_1.jpeg)",
        images={"_page_0_Picture_1.jpeg": Image.new("RGBA", (4, 4))},
        metadata={},
    )
    assert (
        engine_mod.document_from_rendered(rendered, EngineOptions()).images["_page_0_Picture_1.jpeg"][:2] == b"\xff\xd8"
    )

    def broken(fp):
        raise ValueError("cannot parse xref\nsecond line")

    monkeypatch.setattr(engine.converter, "build_document", broken)
    with pytest.raises(EngineError) as info:
        engine.convert(pdf, range(0, 1))
    assert str(info.value) == "ValueError: cannot parse xref"


@pytest.mark.marker
def test_inference_url_replaces_local_vlm(empty_caches, monkeypatch):
    """marker 2.x: with SURYA_INFERENCE_URL (e.g. a `vllm serve` in the job) only its /health is probed."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from surya.settings import settings as s

    if not hasattr(s, "SURYA_INFERENCE_URL"):
        pytest.skip("marker 1.x runs its models in-process")

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(s, "SURYA_INFERENCE_URL", f"http://127.0.0.1:{server.server_port}/v1")
        pieces = engine_mod.missing_cache_pieces()
        assert not any("llama" in p or "gguf" in p or "SURYA_INFERENCE_URL" in p for p in pieces)
    finally:
        server.shutdown()
        server.server_close()
    pieces = engine_mod.missing_cache_pieces()
    assert any(f"127.0.0.1:{server.server_port} (not reachable)" in p for p in pieces)


@pytest.mark.marker
def test_run_llm_service_becomes_markers_ollama_service(marker_pkg):
    """With the run's LLM service, marker's own ConfigParser picks its OllamaService, pointed at the
    authenticating front (secret and per-worker task path in the base URL) and the run's model."""
    from marker.config.parser import ConfigParser

    endpoint = Endpoint(url="http://node7:40123", model="qwen2.5:7b-hpcm-1a2b3c4d", secret="s3cr3t")
    options = EngineOptions(llm=LlmAccess(endpoint, task="2.4242"))
    cli = engine_mod.cli_options(options, range(0, 2))
    parser = ConfigParser(cli)
    assert parser.get_llm_service() == "hpc_marker.engines.markerservices.TimedOllamaService"  # marker's, timed
    config = engine_mod.build_marker_config(options, range(0, 2))
    assert config["use_llm"] is True
    assert config["ollama_base_url"] == "http://node7:40123/s3cr3t/task/2.4242"
    assert config["ollama_model"] == "qwen2.5:7b-hpcm-1a2b3c4d"
    from marker.services.ollama import OllamaService

    service = OllamaService(config)  # marker's own class accepts the settings as given
    assert service.ollama_base_url == config["ollama_base_url"] and service.ollama_model == config["ollama_model"]
    assert "s3cr3t" not in repr(options)  # the secret stays out of reprs and logs


@pytest.mark.marker
def test_run_vllm_service_becomes_markers_openai_service_and_reaches_the_front(marker_pkg, tmp_path):
    """With `--llm-server vllm`, marker's own ConfigParser picks its OpenAIService; marker's own class,
    configured as hpcmarker configures it, reaches the authenticating front before a (stand-in) vLLM: the
    secret as its API key, never in the URL; the worker's task path in the base URL; the answer parsed.
    The run's concurrency budget becomes marker's max_concurrency, timeout and max_retries."""
    from marker.config.parser import ConfigParser
    from marker.processors.llm.llm_table import LLMTableProcessor
    from marker.services.openai import OpenAIService
    from pydantic import BaseModel
    from standin.harness import free_port, read_request_log, start_vllm

    from hpc_marker.llm.front import Front
    from hpc_marker.llm.rules import ALLOWED_VLLM

    secret, model, port, requests = "s3cr3t-" + "x" * 40, "org/tiny-instruct", free_port(), tmp_path / "requests.log"
    env = dict(os.environ, VLLM_API_KEY="upstream-key", STANDIN_VLLM_REQUEST_LOG=str(requests))
    vllm = start_vllm(port, model, env)
    front = Front(
        f"http://127.0.0.1:{port}",
        secret,
        allowed=ALLOWED_VLLM,
        capacity=4,
        upstream_headers={"Authorization": "Bearer upstream-key"},
    ).start()
    try:
        endpoint = Endpoint(url=front.url, model=model, secret=secret, server="vllm")
        llm = LlmAccess(endpoint, task="2.4242", max_concurrency=7, timeout_s=1234, max_retries=1)
        options = EngineOptions(llm=llm)
        assert (
            ConfigParser(engine_mod.cli_options(options, range(2))).get_llm_service()
            == "hpc_marker.engines.markerservices.TimedOpenAIService"  # marker's own class, timed
        )
        config = engine_mod.build_marker_config(options, range(2))
        assert config["use_llm"] is True and config["openai_model"] == model and config["openai_api_key"] == secret
        assert config["openai_base_url"] == f"{front.url}/task/2.4242/v1" and secret not in config["openai_base_url"]
        assert (config["max_concurrency"], config["timeout"], config["max_retries"]) == (7, 1234, 1)

        class Answer(BaseModel):
            corrected_markdown: str

        service = OpenAIService(config)  # marker's own class, as its converter builds it
        assert service("Fix this block.", None, None, Answer) == {"corrected_markdown": "STAND-IN"}
        counters = front.stats()["tasks"]["2.4242"]
        assert counters["requests"] == 1 and counters["tokens_out"] > 0 and counters["failures"] == 0
        assert f"POST /v1/chat/completions model={model}" in read_request_log(requests)
        assert LLMTableProcessor(service, config).max_concurrency == 7  # the budget reaches marker's processors
        wrong = OpenAIService({**config, "openai_api_key": "not-the-secret", "max_retries": 0})
        assert wrong("Fix this block.", None, None, Answer) == {}  # marker's silent failure; refused at the front
        assert (
            front.stats()["denied"] >= 1
            and read_request_log(requests).count(f"POST /v1/chat/completions model={model}") == 1
        )
        mine = engine_mod.build_marker_config(EngineOptions(llm=llm, extra_config={"max_concurrency": 2}), range(1))
        assert mine["max_concurrency"] == 2 and mine["timeout"] == 1234  # --marker-config wins over the budget
        assert secret not in repr(options)
    finally:
        front.stop()
        vllm.terminate()
        vllm.wait(timeout=10)


# --- marker 2.x: the task's own inference server (hpc_marker/inference.py) ---------------------


@pytest.fixture
def surya2(marker_pkg):
    from surya.settings import settings as s

    if not hasattr(s, "SURYA_INFERENCE_URL"):
        pytest.skip("marker 1.x runs its models in-process")
    return s


def _options(args: list[str]) -> dict:
    """`--flag value` / `--flag` pairs as a dict (a value never starts with --)."""
    out, i = {}, 0
    while i < len(args):
        has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        out[args[i]] = args[i + 1] if has_value else True
        i += 2 if has_value else 1
    return out


@pytest.mark.marker
def test_vllm_serve_argv_is_suryas_docker_command(surya2, monkeypatch):
    """Our `vllm serve` gets exactly the arguments surya's vllm backend gives its docker container."""
    from surya.inference.backends import vllm as surya_vllm
    from surya.inference.backends.spawn import SpawnedServer

    from hpc_marker.runtime import inference

    assert inference.GPU_VRAM_GB == surya_vllm.GPU_VRAM_GB
    for gpu, vram in surya_vllm.GPU_VRAM_GB.items():
        assert inference.vllm_capacity(vram) == surya_vllm._gpu_settings(gpu), gpu
    assert inference.VlmSettings.from_surya(surya2, {}) == inference.VlmSettings.from_env({})  # same defaults
    captured: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        captured.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def fake_attach(backend, expected_model_name, spawn_fn, health_url_for, openai_url_for, startup_timeout):
        spawn_fn(43210)
        return SpawnedServer(
            base_url=openai_url_for(43210),
            health_url=health_url_for(43210),
            model_name=expected_model_name,
            pid=None,
            backend=backend,
            spawned_by_us=True,
        )

    monkeypatch.setattr(surya2, "SURYA_INFERENCE_URL", None)
    monkeypatch.setattr(surya_vllm, "_resolve_docker_binary", lambda: "docker")
    monkeypatch.setattr(surya_vllm.subprocess, "run", fake_run)
    monkeypatch.setattr(surya_vllm, "attach_or_spawn", fake_attach)
    surya_vllm.VllmBackend().start()
    docker = captured[0]
    theirs = _options(docker[docker.index(surya2.VLLM_DOCKER_IMAGE) + 1 :])
    settings = inference.InferenceSettings(mode="native")
    ours = inference.server_argv(
        settings,
        inference.VlmSettings.from_surya(surya2, {}),
        43210,
        inference.vllm_capacity(surya_vllm.GPU_VRAM_GB[surya2.VLLM_GPU_TYPE]),
    )
    assert ours[:3] == ["vllm", "serve", theirs.pop("--model")]
    mine = _options(ours[3:])
    assert (mine.pop("--host"), mine.pop("--port")) == ("127.0.0.1", "43210")
    assert mine == theirs


@pytest.mark.marker
def test_surya_client_uses_the_task_server_and_spawns_nothing(surya2, tmp_path):
    """With the environment task_inference_server yields, marker's own models talk to the task's server
    (the stand-in `vllm`), and neither docker nor a server of surya's own is started."""
    import httpx

    from hpc_marker.runtime.inference import InferenceSettings, task_inference_server

    tripwire = tmp_path / "docker-was-called"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$@" > {tripwire}\nexit 1\n')
    (bin_dir / "docker").chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SURYA_", "VLLM_", "STANDIN_"))}
    environ.update(
        PATH=f"{bin_dir}{os.pathsep}{REPO / 'tests' / 'standin'}{os.pathsep}{os.environ['PATH']}",
        HOME=str(tmp_path / "home"),
        VLLM_GPU_TYPE="a100",
        CUDA_VISIBLE_DEVICES="0",
        STANDIN_VLLM_REQUEST_LOG=str(tmp_path / "requests.log"),
    )
    script = textwrap.dedent(
        """
        import json
        from PIL import Image
        from marker.models import create_model_dict, shutdown_models
        from surya.inference.schema import BatchInputItem
        models = create_model_dict()
        manager = models["inference_manager"]
        handle = manager.backend.start()
        out = manager.generate([BatchInputItem(image=Image.new("RGB", (64, 32), "white"), prompt_type="block")])
        shutdown_models(models)  # what MarkerEngine.close() does
        print(json.dumps({"method": manager.method, "url": handle.base_url, "spawned": handle.spawned_by_us,
                          "model": handle.model_name, "parallel": manager.backend._client_parallel(),
                          "raw": out[0].raw, "error": out[0].error}))
        """
    )
    settings = InferenceSettings(mode="native", startup_timeout_s=30, stop_grace_s=5)
    with task_inference_server(settings, tmp_path / "inference.log", workers=2, environ=environ) as env:
        run = subprocess.run(
            [sys.executable, "-c", script],
            env=dict(environ, **env),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        health = httpx.get(env["SURYA_INFERENCE_URL"].removesuffix("/v1") + "/health", trust_env=False)
        assert health.status_code == 200  # the worker's close and exit left the task's server alone
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {
        "method": "vllm",
        "url": env["SURYA_INFERENCE_URL"],
        "spawned": False,
        "model": "datalab-to/surya-ocr-2",
        "parallel": int(env["SURYA_INFERENCE_PARALLEL"]),
        "raw": "<p>Stand-in OCR text.</p>",
        "error": False,
    }
    assert env["SURYA_INFERENCE_PARALLEL"] == "36"  # a100 (40 GB): max_num_seqs 48, x1.5 over 2 workers
    requests = (tmp_path / "requests.log").read_text()
    assert "POST /v1/chat/completions model=datalab-to/surya-ocr-2" in requests
    assert not tripwire.exists()
    assert not (tmp_path / "home" / ".cache" / "datalab" / "surya" / "vllm_server.json").exists()  # no sentinel


@pytest.mark.marker
def test_native_vllm_needs_only_the_weights_in_the_hf_cache(empty_caches, surya2, monkeypatch):
    """The cache check (doctor, MarkerEngine): with `vllm` on PATH the task serves the VLM itself, so
    docker is not needed; the checkpoint must be in the HF cache."""
    monkeypatch.setattr(surya2, "SURYA_INFERENCE_BACKEND", "vllm")
    bin_dir = empty_caches / "vllm-bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "vllm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    assert engine_mod._vlm_pieces(surya2) == [
        f"Hugging Face model {surya2.SURYA_MODEL_CHECKPOINT} (HF cache {empty_caches / 'hf'})"
    ]
    _fake_hub(empty_caches / "hf", surya2.SURYA_MODEL_CHECKPOINT, ["config.json", "model.safetensors"])
    assert engine_mod._vlm_pieces(surya2) == []
    monkeypatch.setenv("PATH", str(empty_caches / "nothing"))  # neither vllm nor docker
    assert engine_mod._vlm_pieces(surya2)[0] == "vllm or docker (vllm backend; or set SURYA_INFERENCE_URL)"
