"""Service: what each replica of a run's LLM service job runs, `serve_llm(run_dir, replica)`.

It reads RUN/llm/settings.json and starts the server on a free loopback port:
- ollama: `ollama serve`; waits until it answers, makes sure the model is there (pulls it if it can,
  else fails at once with what to do), creates the derived model when ctx/options are set (a
  deterministic name, reused when present), loads it;
- vllm: `vllm serve MODEL` (llm/vllm.py) with an API key of its own; waits until it has loaded the
  model and serves it.
Then it writes a fresh secret to the replica's `secret` file (0600), starts the authenticating front
on the node's address (its FairGate lets a few more generations than the server's slots through,
the rest wait there), sends one request as the run's engine sends it through that front (llm/check.py:
a server or model that cannot answer it writes the replica's `unfit.json` with the one-line reason, which
ends the tasks waiting for the service at once, and the service fails) and publishes the replica's
endpoint file (url, model, server, replica: never the secret). It serves until SIGTERM/SIGINT (or
until the server dies), and cleans up: endpoint and secret removed, front stopped, the server's
process group terminated (killed after a grace period). Every step is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama

from hpc_marker.llm.budget import front_capacity
from hpc_marker.llm.check import check_service
from hpc_marker.llm.client import Endpoint, ollama_client
from hpc_marker.llm.front import Front
from hpc_marker.llm.process import start_ollama
from hpc_marker.llm.rules import ALLOWLISTS
from hpc_marker.llm.settings import (
    LlmPaths,
    LlmSettings,
    SettingsError,
    derived_model_name,
    normalize_model,
    write_private,
)
from hpc_marker.llm.vllm import start_vllm, wait_vllm
from hpc_marker.servers.managed import ManagedServer, ServerFailed
from hpc_marker.util.logs import configure
from hpc_marker.util.text import one_line

logger = logging.getLogger("hpc_marker.llm.service")  # not __name__: run as `python -m`, this module is __main__


class ServiceError(Exception):
    """The service cannot start or stopped serving; the message is one line."""


class ServiceStopped(BaseException):
    """SIGTERM or SIGINT: stop serving, clean up, exit normally."""


def node_address() -> str:
    """This node's address as its hostname resolves (the first non-loopback IPv4), else loopback."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        infos = []
    addresses = [info[4][0] for info in infos]
    outside = [a for a in addresses if not a.startswith("127.")]
    return (outside or addresses or ["127.0.0.1"])[0]


def _keep_alive(value: str) -> int | str:
    """Ollama's API takes a duration string or a number of seconds ("-1": forever)."""
    try:
        return int(value)
    except ValueError:
        return value


def _installed(client: ollama.Client) -> set[str]:
    return {normalize_model(m.model) for m in client.list().models if m.model}


def prepare_model(url: str, settings: LlmSettings) -> str:
    """Make the model servable on the Ollama at `url`; returns the name to serve (maybe derived)."""
    client = ollama_client(url, settings.load_timeout_s)
    errors = (ollama.ResponseError, httpx.HTTPError, ConnectionError)
    try:
        installed = _installed(client)
    except errors as exc:
        raise ServiceError(f"cannot list the models of ollama: {one_line(exc)}") from None
    if normalize_model(settings.model) not in installed:
        where = f" (OLLAMA_MODELS={settings.models_dir})" if settings.models_dir else ""
        logger.info(
            f"model {settings.model} is not on this node{where}: pulling it (at most {settings.pull_timeout_s:g}s)"
        )
        try:
            ollama_client(url, settings.pull_timeout_s).pull(settings.model)
        except errors as exc:
            hint = f" with OLLAMA_MODELS={settings.models_dir}" if settings.models_dir else ""
            raise ServiceError(
                f"model {settings.model} is not available on this node and cannot be pulled: run "
                f"`hpcmarker llm pull {settings.model}` on a login node{hint} ({one_line(exc)})"
            ) from None
        logger.info(f"pulled {settings.model}")
    name, params = settings.model, settings.parameters()
    if params:
        name = derived_model_name(settings.model, params)
        if normalize_model(name) in installed:
            logger.info(f"reusing derived model {name} ({settings.model} with {json.dumps(params, sort_keys=True)})")
        else:
            try:
                client.create(model=name, from_=settings.model, parameters=params)
            except errors as exc:
                raise ServiceError(
                    f"cannot create {name} from {settings.model} with {params}: {one_line(exc)}"
                ) from None
            logger.info(f"created derived model {name} ({settings.model} with {json.dumps(params, sort_keys=True)})")
    try:  # an empty prompt loads the model, so the first task does not wait for it
        client.generate(model=name, prompt="", keep_alive=_keep_alive(settings.keep_alive))
    except errors as exc:
        raise ServiceError(
            f"model {name} cannot be loaded (within {settings.load_timeout_s:g}s): {one_line(exc)}"
        ) from None
    return name


def _start_server(settings: LlmSettings, paths: LlmPaths, started: list[ManagedServer]) -> tuple[str, dict, str, str]:
    """Start the settings' server and make its model servable: (URL, headers for it, model, version).
    The process is appended to `started` at once, so the caller stops it whatever happens next."""
    log = paths.server_log(settings.server)
    if settings.server == "vllm":
        key = secrets.token_urlsafe(32)  # vLLM's own API key: only the front has it
        logger.info(
            f"starting vllm serve {settings.model} ({' '.join(settings.vllm_flags())}) on a loopback port, "
            f"up to {settings.load_timeout_s:g}s to load; log: {log}"
        )
        process, url = start_vllm(settings, log, key)
        started.append(process)
        version = wait_vllm(process, url, settings, key)
        logger.info(f"vllm {version} serves {settings.model} on {url}")
        return url, {"Authorization": f"Bearer {key}"}, settings.model, version
    logger.info(f"starting ollama serve (parallel {settings.parallel}) on a loopback port; log: {log}")
    ollama_serve = start_ollama(
        log,
        binary=settings.ollama,
        parallel=settings.parallel,
        keep_alive=settings.keep_alive,
        models_dir=settings.models_dir,
        max_queue=settings.max_queue,
    )
    started.append(ollama_serve)
    version = ollama_serve.wait_ready(settings.ready_timeout_s)
    logger.info(f"ollama {version} answers on {ollama_serve.url}")
    return ollama_serve.url, {}, prepare_model(ollama_serve.url, settings), version


def _start_front(settings: LlmSettings, paths: LlmPaths, upstream: str, headers: dict) -> Front:
    """Write a fresh secret and start the authenticating front before the server at `upstream`."""
    secret = secrets.token_urlsafe(32)
    write_private(paths.secret, secret + "\n")
    host = settings.bind_host or node_address()
    try:
        front = Front(
            upstream,
            secret,
            host=host,
            port=settings.port,
            timeout_s=settings.request_timeout_s,
            metrics_path=paths.metrics,
            metrics_interval_s=settings.metrics_interval_s,
            allowed=ALLOWLISTS[settings.server],
            capacity=front_capacity(settings.parallel),
            upstream_headers=headers,
        ).start()
    except OSError as exc:
        raise ServiceError(
            f"the front cannot listen on {host}:{settings.port}: {exc.strerror or exc} "
            "(set bind_host/port in settings.json)"
        ) from None
    return front


def _check(settings: LlmSettings, paths: LlmPaths, front: Front, model: str, version: str) -> str:
    """The capability check through the replica's own front (llm/check.py): how it answered, in one line. A
    server or model that cannot answer: the reason goes to `unfit.json` (the waiting tasks stop at once) and
    ServiceError."""
    host = "127.0.0.1" if front.host in ("0.0.0.0", "::") else front.host
    url = f"http://[{host}]:{front.port}" if ":" in host else f"http://{host}:{front.port}"
    endpoint = Endpoint(url, model, paths.secret.read_text().strip(), server=settings.server)
    moved = front.stats()["total"]["answers_moved"]
    result = check_service(
        settings.check,
        endpoint,
        f"{settings.server} {version} on {socket.gethostname()}",
        settings.request_timeout_s,
        str(paths.server_log(settings.server)),
    )
    if not result.ok:
        unfit = {"reason": result.line, "model": model, "server": settings.server, "replica": paths.replica}
        write_private(paths.unfit, json.dumps({**unfit, "job_id": os.environ.get("SLURM_JOB_ID")}) + "\n")
        logger.error(f"capability check failed: {result.line}")
        raise ServiceError(result.line)
    if front.stats()["total"]["answers_moved"] > moved:
        return (
            f"{result.line} (a reasoning model: its answers arrive in thinking/reasoning_content; the front moves them)"
        )
    return result.line


def _publish(settings: LlmSettings, paths: LlmPaths, front: Front, model: str, version: str) -> None:
    """Write the replica's endpoint file (never the secret): the tasks find the service through it."""
    url = front.url if front.host not in ("0.0.0.0", "::") else f"http://{node_address()}:{front.port}"
    capacity = front_capacity(settings.parallel)
    endpoint = {
        "url": url,
        "model": model,
        "server": settings.server,
        "replica": paths.replica,
        "started": time.time(),
        "host": socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "server_version": version,
        "capacity": capacity,
    }
    write_private(paths.endpoint, json.dumps(endpoint, indent=1) + "\n")
    logger.info(
        f"replica {paths.replica}: serving {model} at {url}, {capacity} generations at {settings.server} at once "
        f"(the rest wait at the front); secret in {paths.secret}; endpoint {paths.endpoint}"
    )


def _clean_up(paths: LlmPaths, front: Front | None, started: list[ManagedServer]) -> None:
    """Endpoint and secret removed, the front stopped, the server stopped (killed after its grace)."""
    paths.withdraw()
    if front is not None:
        front.stop()
    for process in started:
        how = process.stop(grace_s=process.stop_grace_s)
        logger.info(f"{process.name} {how} (exit code {process.returncode})")


def serve_llm(run_dir: str, replica: int = 0, *, stop: threading.Event | None = None) -> None:
    """Run replica `replica` of the run's LLM service until SIGTERM/SIGINT (or `stop` is set). Raises ServiceError."""
    paths = LlmPaths(Path(run_dir), replica)
    try:
        settings = paths.load_settings()
    except SettingsError as exc:
        raise ServiceError(str(exc)) from None
    paths.create()
    paths.withdraw()  # left by a service that was killed, or an earlier round
    paths.unfit.unlink(missing_ok=True)
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame) -> None:
        # One-shot: scancel (and a local cancel) signal every process of the job (a local cancel the whole
        # process tree), so a second one often follows at once; raising again
        # would abort the cleanup below (secret left behind, front still up).
        if stop.is_set():
            return
        stop.set()
        raise ServiceStopped(signal.Signals(signum).name)

    def quiet(signum: int, _frame) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    started: list[ManagedServer] = []
    front: Front | None = None
    try:
        upstream, headers, model, version = _start_server(settings, paths, started)
        front = _start_front(settings, paths, upstream, headers)
        logger.info(f"capability check: {_check(settings, paths, front, model, version)}")
        _publish(settings, paths, front, model, version)
        while not stop.wait(1.0):
            started[0].ensure_running("while serving")  # ServerFailed: the service fails with its log's tail
        logger.info("stop requested")
    except ServiceStopped as stopped:
        logger.info(f"stopped by {stopped}")
    except ServerFailed as exc:
        raise ServiceError(str(exc)) from None
    finally:
        for sig in previous:
            signal.signal(sig, quiet)  # a second signal must not interrupt the cleanup
        _clean_up(paths, front, started)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str]) -> int:
    """python -m hpc_marker.llm.service RUN_DIR [REPLICA] (what `hpcmarker llm serve` does)."""
    if len(argv) not in (2, 3) or (len(argv) == 3 and not argv[2].isdigit()):
        print("usage: python -m hpc_marker.llm.service RUN_DIR [REPLICA]", file=sys.stderr)
        return 2
    replica = int(argv[2]) if len(argv) == 3 else 0
    configure(0, job=f"llm {replica}")
    try:
        serve_llm(argv[1], replica)
    except ServiceError as exc:
        print(f"hpcmarker llm: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
