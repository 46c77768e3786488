"""LLM settings and files: the RUN/llm/ folder, settings.json, the derived model name, private writes; the
run's LLM service as the run record keeps it (LlmRecord, RunRecord.llm: what the tasks, the scripts and the
reports read).

RUN/llm/ holds:
  settings.json   LlmSettings, written at submit time, read by every replica of the service
  secret          a replica's secret, mode 0600, only while it runs
  endpoint.json   {"url", "model", "server", "replica", "started", "host", "job_id"}: where its front
                  listens (no secret)
  metrics.jsonl   one JSON line every few seconds from its front (per-task counters, queue, tokens/s)
  ollama.log      stdout and stderr of `ollama serve` (vllm.log: of `vllm serve`)
  unfit.json      {"reason", "model", "server", ...}: the capability check (llm/check.py) found that the
                  server or model cannot answer the run's requests; tasks waiting for the service stop at once
Replica 0 uses these names; replica r > 0 the same names with `-r` (endpoint-1.json, secret-1, ...).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hpc_marker.util.files import atomic_write

SERVERS = ("ollama", "vllm")
# The capability check a replica makes before it publishes its endpoint (llm/check.py): marker's constrained
# request (a JSON schema and a page image), the `text` engine's plain chat, or none. `--llm-check auto`: by engine.
CHECKS = ("marker", "chat", "off")


class SettingsError(Exception):
    """settings.json is missing or malformed."""


@dataclass(frozen=True, kw_only=True)
class LlmRecord:
    """The run's LLM service as run.json keeps it (RunRecord.llm): what the service's jobs get, how a task waits
    for it and shares it. The service job's own settings are LlmSettings (RUN/llm/settings.json)."""

    model: str
    server: str = "ollama"  # one of SERVERS (older runs: ollama)
    replicas: int = 1  # service jobs, each with its own server and front (older runs: one)
    gpus: int  # per replica
    parallel: int  # generations per replica at once
    ctx: int | None = None  # what refines the text, with model and options (engines.output_settings)
    options: dict[str, Any] = field(default_factory=dict)
    wait_timeout_s: float  # how long a task waits for the service before failing
    request_timeout_s: float  # per request through the front
    concurrency: int | None = None  # LLM requests in flight per worker; None: the run's budget (llm/budget.py)
    cpus: int  # per replica
    mem: str | None = None  # per replica (None: the cluster's default)
    check: str = "auto"  # --llm-check: the service's capability check (llm/check.py); older runs: auto

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LlmRecord:
        """From run.json; keys it does not know are left out (TypeError when one it needs is missing)."""
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LlmSettings:
    """What the service job needs; stored as RUN/llm/settings.json."""

    model: str
    server: str = "ollama"  # one of SERVERS
    parallel: int = 1  # concurrent generations per replica: OLLAMA_NUM_PARALLEL, vLLM's --max-num-seqs
    replicas: int = 1  # service jobs, each with its own server and front
    gpus: int = 1  # GPUs per replica (vLLM: --tensor-parallel-size)
    ctx: int | None = None  # num_ctx of the derived model / vLLM's --max-model-len (None: the model's own)
    options: dict[str, Any] = field(default_factory=dict)  # Modelfile parameters / more `vllm serve` flags
    server_args: list[str] = field(default_factory=list)  # vLLM: more `vllm serve` arguments, as given
    image: str | None = None  # vLLM: run `vllm serve` in this Apptainer/Singularity image (--nv)
    keep_alive: str = "24h"  # OLLAMA_KEEP_ALIVE: keep the model loaded for the whole run
    models_dir: str | None = None  # OLLAMA_MODELS (None: inherit the job's environment / Ollama's default)
    bind_host: str | None = None  # address of the front (None: this node's hostname-resolved address)
    port: int = 0  # port of the front (0: a free one)
    max_queue: int | None = None  # OLLAMA_MAX_QUEUE (None: Ollama's default)
    ready_timeout_s: float = 120.0  # `ollama serve` must answer within this
    pull_timeout_s: float = 900.0  # a missing model must be pulled within this
    load_timeout_s: float = 600.0  # creating the derived model and loading it must finish within this
    request_timeout_s: float = 600.0  # per request through the front (504 after)
    metrics_interval_s: float = 5.0
    ollama: str = "ollama"  # the binary, looked up on PATH
    vllm: str = "vllm"  # the binary, looked up on PATH (or in the image)
    check: str = "off"  # one of CHECKS (older runs' settings.json: none); submit writes the run's

    def validate(self) -> None:
        if not self.model or not isinstance(self.model, str):
            raise SettingsError("settings.json: 'model' must name a model, e.g. qwen2.5:7b")
        if self.server not in SERVERS:
            raise SettingsError(f"settings.json: server {self.server!r}: choose from {', '.join(SERVERS)}")
        if self.check not in CHECKS:
            raise SettingsError(f"settings.json: check {self.check!r}: choose from {', '.join(CHECKS)}")
        for name in ("parallel", "replicas", "gpus"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SettingsError(f"settings.json: {name} {getattr(self, name)!r}: must be at least 1")
        if self.ctx is not None and self.ctx < 256:
            raise SettingsError(f"settings.json: ctx {self.ctx}: must be at least 256 tokens")
        for name in ("ready_timeout_s", "pull_timeout_s", "load_timeout_s", "request_timeout_s", "metrics_interval_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"settings.json: {name} must be positive")

    def parameters(self) -> dict[str, Any]:
        """Modelfile parameters of the derived model ({} when the base model is used as is)."""
        params = dict(self.options)
        if self.ctx is not None:
            params["num_ctx"] = int(self.ctx)
        return params

    def vllm_flags(self) -> list[str]:
        """`vllm serve` flags of these settings: --max-num-seqs from parallel, tensor parallelism from
        gpus, --max-model-len from ctx, each option `key=value` as `--key value` (true: a bare
        `--key`, false: left out), then server_args as given (later flags win). Pure."""
        flags = ["--max-num-seqs", str(self.parallel)]
        if self.gpus > 1:
            flags += ["--tensor-parallel-size", str(self.gpus)]
        if self.ctx is not None:
            flags += ["--max-model-len", str(int(self.ctx))]
        for key, value in self.options.items():
            flag = "--" + str(key).replace("_", "-").lstrip("-")
            if value is True:
                flags.append(flag)
            elif value is not False and value is not None:
                flags += [flag, value if isinstance(value, str) else json.dumps(value)]
        return flags + [str(arg) for arg in self.server_args]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LlmSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(
                f"settings.json: unknown keys {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        if "model" not in data:
            raise SettingsError("settings.json: 'model' is required")
        try:
            settings = cls(**data)
        except TypeError as exc:
            raise SettingsError(f"settings.json: {exc}") from None
        settings.validate()
        return settings

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LlmPaths:
    """The files of RUN/llm/ for one replica of the service (settings.json is the run's)."""

    run_dir: Path
    replica: int = 0

    @property
    def root(self) -> Path:
        return Path(self.run_dir) / "llm"

    def _own(self, stem: str, suffix: str = "") -> Path:
        return self.root / (f"{stem}-{self.replica}{suffix}" if self.replica else f"{stem}{suffix}")

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"

    @property
    def secret(self) -> Path:
        return self._own("secret")

    @property
    def endpoint(self) -> Path:
        return self._own("endpoint", ".json")

    @property
    def unfit(self) -> Path:
        return self._own("unfit", ".json")

    @property
    def metrics(self) -> Path:
        return self._own("metrics", ".jsonl")

    def server_log(self, server: str) -> Path:
        """`ollama.log` or `vllm.log` (with -r for replica r)."""
        return self._own(server, ".log")

    def all_replicas(self, count: int) -> list[LlmPaths]:
        return [LlmPaths(self.run_dir, replica) for replica in range(max(1, count))]

    def withdraw(self) -> None:
        """The endpoint and the secret removed: the replica serves no more. The service does it as it stops;
        whoever stops it does it again, for a service killed before its own cleanup ran."""
        for path in (self.endpoint, self.secret):
            path.unlink(missing_ok=True)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)

    def load_settings(self) -> LlmSettings:
        try:
            data = json.loads(self.settings.read_text())
        except FileNotFoundError:
            raise SettingsError(f"{self.settings}: no LLM settings for this run") from None
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{self.settings}: cannot read it ({exc})") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{self.settings}: must hold a JSON object")
        return LlmSettings.from_json(data)

    def save_settings(self, settings: LlmSettings) -> None:
        settings.validate()
        self.create()
        write_private(self.settings, json.dumps(settings.to_json(), indent=1) + "\n")


def write_private(path: Path, text: str) -> None:
    """Write atomically a file only the user can read (0600), flushed to storage before it appears."""
    atomic_write(path, text, mode=0o600, fsync=True)


def normalize_model(name: str) -> str:
    """Ollama's canonical name: a missing tag is `:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def derived_model_name(base: str, parameters: dict[str, Any]) -> str:
    """`qwen2.5:7b` + {num_ctx: 8192} -> `qwen2.5-7b-hpcm-<8 hex>`; same inputs, same name. Pure."""
    canonical = json.dumps(
        {"from": normalize_model(base), "parameters": parameters}, sort_keys=True, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    stem = base[: -len(":latest")] if base.endswith(":latest") else base
    slug = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"
    return f"{slug}-hpcm-{digest}"
