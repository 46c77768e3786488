"""Prefetch: fill a shared cache folder on a login node with internet, for offline compute nodes.

Owns: the cache layout (`CACHE/fonts`, `models`, `huggingface`, `ollama`), fetching marker's
font and weights with marker's and surya's own download functions, pulling an Ollama model into
OLLAMA_MODELS through a private `ollama serve` (llm.process), and `CACHE/env.sh`: the `export` lines that point
a job at the cache and keep it offline. Guide: docs/offline.md.

The marker download runs in a child process (`_child_marker`): marker
and surya read their cache variables once, at import, and the child is the one place where
`requests` gets a default timeout (marker and surya call it without one). It stops at the first
piece it cannot fetch, so an offline node fails in seconds, not after surya's retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)
ENV_FILE = "env.sh"
CONNECT_TIMEOUT_S = 10
DEFAULT_CACHE = Path("~/.cache/hpcmarker")
VLM_CHOICES = ("auto", "vllm", "llamacpp", "none")  # marker 2.x: which inference backend's weights
_PROTOCOL = "@@hpcmarker-prefetch "


class PrefetchError(Exception):
    """Something could not be fetched; the message is one line and names it."""


@dataclass(frozen=True)
class CacheLayout:
    root: Path

    @property
    def env_file(self) -> Path:
        return self.root / ENV_FILE

    def marker_env(self) -> dict[str, str]:
        """The variables that move marker's font and surya's weights into the cache (and keep the hub offline)."""
        fonts, hf = self.root / "fonts", self.root / "huggingface"
        return {
            "MODEL_CACHE_DIR": str(self.root / "models"),
            "FONT_DIR": str(fonts),
            "FONT_PATH": str(fonts / os.environ.get("FONT_NAME", "GoNotoCurrent-Regular.ttf")),
            "HF_HOME": str(hf),
            "HF_HUB_CACHE": str(hf / "hub"),
            "DOCKER_HF_CACHE_PATH": str(hf),
            "HF_HUB_OFFLINE": "1",
        }

    def ollama_models(self) -> Path:
        """OLLAMA_MODELS when it is set (the folder you already use), else CACHE/ollama."""
        return Path(os.environ["OLLAMA_MODELS"]) if os.environ.get("OLLAMA_MODELS") else self.root / "ollama"


@dataclass
class MarkerPrefetch:
    fetched: list[str] = field(default_factory=list)
    seconds: float = 0.0
    still_missing: list[str] = field(default_factory=list)  # node pieces no cache holds (llama-server, docker)


def read_env_file(path: Path) -> dict[str, str]:
    """The `export KEY=VALUE` lines of an env.sh (as written by `write_env_file`)."""
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                key, _, value = words[1].partition("=")
                values[key] = value
    return values


def env_lines(values: dict[str, str]) -> list[str]:
    return [f"export {key}={shlex.quote(value)}" for key, value in values.items()]


def write_env_file(path: Path, values: dict[str, str]) -> list[str]:
    """Merge `values` into env.sh (earlier prefetches' variables stay); returns its export lines."""
    merged = read_env_file(path) | values
    lines = env_lines(merged)
    header = [
        f"# written by `hpcmarker prefetch` on {socket.gethostname()}, {time.strftime('%Y-%m-%d %H:%M')}.",
        "# `source` it before `hpcmarker submit` (sbatch passes your environment on) or in a template's setup.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(header + lines) + "\n")
    tmp.replace(path)
    return lines


def _reason(exc: BaseException) -> str:
    """One short line for a download error: name resolution, refused, timed out, else the first line."""
    text = " ".join(str(exc).split())
    for needle, meaning in (
        ("Failed to resolve", "cannot resolve the host (no DNS / no internet here?)"),
        ("Name or service not known", "cannot resolve the host (no DNS / no internet here?)"),
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Read timed out", "no data within the timeout"),
    ):
        if needle in text:
            return f"{type(exc).__name__}: {meaning}"
    return f"{type(exc).__name__}: {text[:200] or 'no detail'}"


def prefetch_marker(cache: Path, *, timeout_s: float = 120.0, vlm: str = "auto") -> MarkerPrefetch:
    """Fetch marker's font and weights into `cache` (see CacheLayout), each piece logged as it comes; raises
    PrefetchError at the first failure."""
    from hpc_marker.engines.marker import EngineUnavailable, _require_marker

    try:
        _require_marker()
    except EngineUnavailable as exc:
        raise PrefetchError(str(exc)) from None
    layout = CacheLayout(cache.expanduser().resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **layout.marker_env(),
        "HF_HUB_OFFLINE": "0",
        "TMPDIR": str(layout.root / ".tmp"),
        "HF_HUB_DOWNLOAD_TIMEOUT": str(int(timeout_s)),
        "HF_HUB_ETAG_TIMEOUT": str(CONNECT_TIMEOUT_S),
    }
    env.pop("TRANSFORMERS_OFFLINE", None)
    Path(env["TMPDIR"]).mkdir(exist_ok=True)
    log = layout.root / "prefetch.log"
    here = str(Path(__file__).resolve().parent.parent)  # the child imports this very hpc_marker
    code = (
        f"import sys; p = {here!r}; sys.path[:0] = [] if p in sys.path else [p]; "
        "from hpc_marker.admin.prefetch import _child_marker; sys.exit(_child_marker(float(sys.argv[1]), sys.argv[2]))"
    )
    argv = [sys.executable, "-c", code, str(timeout_s), vlm]
    result, started, failure = MarkerPrefetch(), time.monotonic(), None
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
        for line in proc.stdout:
            if not line.startswith(_PROTOCOL):
                continue
            event = json.loads(line[len(_PROTOCOL) :])
            if event["event"] == "start":
                logger.info(f"fetching {event['piece']} from {event['url']}")
            elif event["event"] == "done":
                result.fetched.append(event["piece"])
                logger.info(f"  ok ({event['seconds']:.1f}s)")
            elif event["event"] == "fail":
                failure = event
            elif event["event"] == "missing":
                result.still_missing = event["pieces"]
        code = proc.wait()
    result.seconds = time.monotonic() - started
    with contextlib.suppress(OSError):
        Path(env["TMPDIR"]).rmdir()
    if failure:
        rest = f"; not fetched either: {', '.join(failure['remaining'])}" if failure["remaining"] else ""
        raise PrefetchError(
            f"could not fetch {failure['piece']} from {failure['url']} ({failure['error']}) after "
            f"{result.seconds:.1f}s{rest}; run prefetch where that address can be reached"
        )
    if code != 0:
        from hpc_marker.servers.managed import log_tail

        raise PrefetchError(f"the marker download exited with code {code}; last lines of {log}: {log_tail(log, 3)}")
    return result


def prefetch_llm(model: str, models_dir: Path, *, log: Path, timeout_s: float = 120.0) -> None:
    """Pull `model` into `models_dir` through a private `ollama serve` that uses that folder (`log`: its log);
    the pull's steps logged."""
    import httpx
    import ollama

    from hpc_marker.llm.client import ollama_client
    from hpc_marker.llm.process import OllamaError, start_ollama
    from hpc_marker.llm.settings import normalize_model

    models_dir.mkdir(parents=True, exist_ok=True)
    try:
        with start_ollama(log, models_dir=str(models_dir)) as process:  # stopped (grace 10 s) on leaving
            process.wait_ready(30.0)
            client = ollama_client(process.url, timeout_s, connect_s=CONNECT_TIMEOUT_S)
            if normalize_model(model) in {normalize_model(m.model) for m in client.list().models if m.model}:
                logger.info(f"  {model} is already in {models_dir} (`ollama pull` it there to update)")
                return
            last: tuple[str, int] = ("", -1)
            for part in client.pull(model, stream=True):  # like `hpcmarker llm pull`: a line per status and 10 %
                step = 10 * part.completed // part.total if part.total and part.completed is not None else -1
                if part.status and (part.status, step) != last:
                    logger.info(f"  {part.status} {10 * step}%" if step >= 0 else f"  {part.status}")
                last = (part.status or "", step)
    except OllamaError as exc:
        raise PrefetchError(str(exc)) from None
    except ollama.ResponseError as exc:
        raise PrefetchError(f"could not pull {model} into {models_dir}: {exc.error}") from None
    except (httpx.HTTPError, ConnectionError) as exc:
        raise PrefetchError(f"could not pull {model} into {models_dir}: {_reason(exc)}") from None


# ---- the child process: runs with the cache variables set before marker is imported ----


def _emit(**event) -> None:
    print(_PROTOCOL + json.dumps(event), flush=True)


def _bounded_requests(read_s: float) -> None:
    """Give every `requests` call in this process a timeout (marker's and surya's have none)."""
    import requests

    original = requests.Session.request

    def request(self, method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (CONNECT_TIMEOUT_S, read_s)
        return original(self, method, url, **kwargs)

    requests.Session.request = request


def _font() -> None:
    from marker.settings import settings
    from marker.util import download_font

    try:
        download_font()
    except BaseException:
        Path(settings.FONT_PATH).unlink(missing_ok=True)  # it opens the file before checking the answer
        raise


def _s3(checkpoint: str) -> None:
    from surya.common.s3 import check_manifest, download_directory
    from surya.settings import settings

    remote = checkpoint.removeprefix("s3://")
    local = Path(settings.MODEL_CACHE_DIR) / remote
    local.mkdir(parents=True, exist_ok=True)  # download_directory moves files into it
    try:
        download_directory(remote, str(local))
    except BaseException:
        if not any(local.iterdir()):
            local.rmdir()  # no empty model folder left behind
        raise
    if not check_manifest(str(local)):
        raise RuntimeError(f"{local} is incomplete after the download")


def _hub(repo: str, subfolder: str = "") -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(repo, allow_patterns=[f"{subfolder}/*"] if subfolder else None)


def _gguf() -> None:
    from surya.inference.backends.llamacpp import _download_gguf_files

    _download_gguf_files()


def marker_pieces(vlm: str = "auto") -> list[tuple[str, str, Callable[[], None]]]:
    """(what, from where, how) for each piece the installed marker needs; the same pieces
    `engines.marker.missing_cache_pieces()` looks for."""
    from functools import partial

    from huggingface_hub import constants
    from marker.settings import settings as ms
    from surya.settings import settings as s

    from hpc_marker.engines.marker import _require_marker, _series

    major = _series(_require_marker())[0]
    pieces = [(f"font {ms.FONT_NAME}", f"{ms.ARTIFACT_URL}/{ms.FONT_NAME}", _font)]
    if major == 1:
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
        if checkpoint.startswith("s3://"):
            url = f"{s.S3_BASE_URL.rstrip('/')}/{checkpoint.removeprefix('s3://')}"
            pieces.append((f"model {checkpoint}", url, partial(_s3, checkpoint)))
        elif not os.path.isdir(checkpoint):
            parts = checkpoint.removeprefix("hf://").split("/")
            repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
            pieces.append(
                (
                    f"Hugging Face model {checkpoint.removeprefix('hf://')}",
                    f"{constants.ENDPOINT}/{repo}",
                    partial(_hub, repo, sub),
                )
            )
    if major >= 2:
        if vlm == "auto":
            vlm = "none" if s.SURYA_INFERENCE_URL else (s.SURYA_INFERENCE_BACKEND or "both")
        if vlm in ("vllm", "both"):
            repo = s.SURYA_MODEL_CHECKPOINT
            pieces.append((f"VLM weights {repo} (vllm)", f"{constants.ENDPOINT}/{repo}", partial(_hub, repo)))
        if vlm in ("llamacpp", "both") and not (s.SURYA_GGUF_LOCAL_MODEL_PATH and s.SURYA_GGUF_LOCAL_MMPROJ_PATH):
            pieces.append(
                (f"GGUF files {s.SURYA_GGUF_REPO} (llama.cpp)", f"{constants.ENDPOINT}/{s.SURYA_GGUF_REPO}", _gguf)
            )
    return pieces


def _child_marker(timeout_s: float, vlm: str) -> int:
    _bounded_requests(timeout_s)
    pieces = marker_pieces(vlm)
    for i, (what, url, fetch) in enumerate(pieces):
        _emit(event="start", piece=what, url=url)
        started = time.monotonic()
        try:
            fetch()
        except Exception as exc:
            _emit(event="fail", piece=what, url=url, error=_reason(exc), remaining=[p[0] for p in pieces[i + 1 :]])
            return 1
        _emit(event="done", piece=what, seconds=time.monotonic() - started)
    from hpc_marker.engines.marker import missing_cache_pieces

    _emit(event="missing", pieces=missing_cache_pieces())
    return 0
