"""Conversion rates measured by finished runs, kept per user, and what they predict for a folder (`estimate`).

A finished run's collector records what its conversion tasks did (manage/accounting.py): pages converted,
GPU-seconds allocated, and how much of that went to starting up and to idling at the end, under a key of the
engine and the options that change the output (format, OCR, images, the LLM model, marker's extra settings).
The file is `rates.json` in the user's cache folder (planning/scancache.cache_home); samples of one key add up,
so a rate rests on every run recorded under it (`pages` says on how many pages). `predict` and `smallest_gpus`
are pure: wall time (first task start to last task end, without queue wait) = start-up + the share's pages at
the working rate, stretched by the recorded runs' idle tail; GPU-hours = GPUs × wall time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpc_marker.planning.scancache import cache_home
from hpc_marker.util.files import atomic_write

RATES_FILE = "rates.json"


def rate_key(engine: str, engine_options: dict[str, Any], llm_model: str | None = None) -> str:
    """The key of the rates of runs whose output is made the same way: the engine and the options that change
    the output (or its cost). Pure."""
    extra = engine_options.get("extra_config") or {}
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8] if extra else "-"
    ocr = "auto" if engine_options.get("ocr_auto") else bool(engine_options.get("force_ocr"))  # --force-ocr [auto]
    return (
        f"{engine} format={engine_options.get('output_format', 'markdown')} "
        f"ocr={ocr} images={bool(engine_options.get('images', True))} "
        f"llm={llm_model or '-'} extra={digest}"
    )


@dataclass(frozen=True)
class Rate:
    """What the runs recorded under one key add up to."""

    key: str
    pages: int  # pages converted
    gpu_seconds: float  # allocated to their conversion tasks
    startup_gpu_seconds: float
    idle_gpu_seconds: float
    tasks: int
    runs: int = 1

    @property
    def pages_per_gpu_second(self) -> float:
        """Pages per GPU-second of work (allocation less start-up and the idle tail)."""
        working = self.gpu_seconds - self.startup_gpu_seconds - self.idle_gpu_seconds
        return self.pages / working if working > 0 else 0.0

    @property
    def tail_factor(self) -> float:
        """How much longer than its share at the working rate the run's last task took: the idle tail of the
        others (1.0: none)."""
        working = self.gpu_seconds - self.startup_gpu_seconds - self.idle_gpu_seconds
        return (working + self.idle_gpu_seconds) / working if working > 0 else 1.0

    @property
    def startup_seconds(self) -> float:
        """A task's start-up, on average."""
        return self.startup_gpu_seconds / self.tasks if self.tasks else 0.0

    def plus(self, other: Rate) -> Rate:
        return Rate(
            self.key,
            self.pages + other.pages,
            self.gpu_seconds + other.gpu_seconds,
            self.startup_gpu_seconds + other.startup_gpu_seconds,
            self.idle_gpu_seconds + other.idle_gpu_seconds,
            self.tasks + other.tasks,
            self.runs + other.runs,
        )


def configured_price(profile: str | None) -> float | None:
    """The `gpu_hour_price` profile `profile` sets (None: none, or no such profile)."""
    from hpc_marker.config import load_config
    from hpc_marker.util.errors import UserError

    if not profile:
        return None
    try:
        price = load_config().profile(profile).get("gpu_hour_price")
    except UserError:
        return None
    return float(price) if price is not None else None


def rates_file(home: Path | None = None) -> Path:
    return (home or cache_home()) / RATES_FILE


def read_rates(home: Path | None = None) -> dict[str, Rate]:
    """Every recorded rate by key ({} when none, or the file is unreadable)."""
    try:
        data = json.loads(rates_file(home).read_text(encoding="utf-8"))
        return {key: Rate(**row) for key, row in data.items()}
    except (OSError, ValueError, TypeError):
        return {}


def record_rate(sample: Rate, home: Path | None = None) -> Rate:
    """Add a finished run's sample to its key's rate (written atomically; a full or read-only cache folder
    keeps nothing, as with the page-count cache); the rate it now rests on."""
    rates = read_rates(home)
    rate = rates[sample.key].plus(sample) if sample.key in rates else sample
    rates[sample.key] = rate
    path = rates_file(home)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({key: asdict(value) for key, value in rates.items()}, indent=1) + "\n")
    return rate


@dataclass(frozen=True)
class Prediction:
    pages: int
    gpus: int
    wall_seconds: float
    gpu_hours: float
    cost: float | None
    rate_pages_per_gpu_second: float
    startup_seconds: float


def predict(rate: Rate, pages: int, gpus: int, price: float | None = None) -> Prediction:
    """Wall time and GPU-hours of `pages` on `gpus` tasks at `rate`. Pure."""
    speed = rate.pages_per_gpu_second
    wall = rate.startup_seconds + (pages / gpus / speed * rate.tail_factor if speed else math.inf)
    gpu_hours = gpus * wall / 3600
    return Prediction(
        pages,
        gpus,
        round(wall, 1),
        round(gpu_hours, 4),
        round(gpu_hours * price, 2) if price is not None else None,
        round(speed, 4),
        round(rate.startup_seconds, 1),
    )


def smallest_gpus(rate: Rate, pages: int, deadline_s: float) -> int | None:
    """The fewest GPUs whose predicted wall time is within `deadline_s` (None: none, start-up alone is longer;
    at most one GPU per page). Pure."""
    if rate.pages_per_gpu_second <= 0 or rate.startup_seconds >= deadline_s:
        return None
    low, high = 1, max(1, pages)
    if predict(rate, pages, high).wall_seconds > deadline_s:
        return None
    while low < high:
        middle = (low + high) // 2
        if predict(rate, pages, middle).wall_seconds <= deadline_s:
            high = middle
        else:
            low = middle + 1
    return low
