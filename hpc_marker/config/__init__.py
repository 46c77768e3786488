"""Config: hpcmarker's settings in layers, resolved in one place, and the options they set.

Layers, lowest first: the packaged defaults (defaults.toml beside this file), the site file
($HPCMARKER_SITE_CONFIG: a file, or a folder holding config.toml; else /etc/hpcmarker/config.toml),
the user's file ($XDG_CONFIG_HOME/hpcmarker/config.toml). `[submit]` values become the defaults of
`hpcmarker submit` options (click's default_map), under HPCMARKER_SUBMIT_<OPTION> variables and
command-line flags; `[retry]` and `[export]` those of `hpcmarker retry` and `hpcmarker export`; `[quality]`
the output flags' thresholds (hpc_marker/quality), fixed in each run's record when it is submitted; `[ocr]`
how `--force-ocr auto` decides and weighs (planning/textcheck.py).
Profiles (`[profiles.NAME]`) describe partitions. Unknown keys are errors that name the valid ones.

(this file)   the layers, their sections and keys, profiles; each value's source (`Config.settings`: `config show`)
options.py    the option schema: each submit (resume, retry) option once; the [submit] keys come from it
types.py      the options' click types: parsing and bounds, shared by the command line and library callers
defaults.toml the packaged defaults: the one source of every default
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_marker.config.options import PARAMETER_NAMES, SUBMIT_KEYS
from hpc_marker.util.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PLAN_KEYS = {"scan_workers", "min_task_pages"}
# [submit] keys that `hpcmarker estimate` shares (cli/estimate.py SHARED)
ESTIMATE_KEYS = {"gpus", "engine", "output_format", "force_ocr", "images", "llm_model", "profile", "min_task_pages"}
ESTIMATE_KEYS |= {"scan_workers", "executor"}  # [submit] keys that `hpcmarker plan` shares (it scans and plans too)
JOB_KEYS = {"template", "gres", "cpus_per_task", "mem", "time", "llm_server", "mps"}
RETRY_KEYS = {"min_share"}  # `hpcmarker retry` options
OCR_KEYS = {"sample_pages", "share", "page_weight"}  # `--force-ocr auto` (planning/textcheck.py)
EXPORT_KEYS = {"rows_per_shard", "shard_size", "follow_ups"}  # `hpcmarker export` options
QUALITY_KEYS = {  # output flags' thresholds (hpc_marker/quality/flags.py)
    "repetition_ngram",
    "repetition_min_count",
    "repetition_min_words",
    "repetition_share",
    "oversize_ratio",
    "oversize_floor_kb",
    "wide_table_columns",
    "wide_table_cells",
    "empty_layer_chars",
    "empty_output_below",
    "lost_script_min_chars",
    "lost_script_min_share",
    "lost_script_kept_share",
}
PROFILE_KEYS = {
    "template",
    "partition",
    "gres",
    "cpus_per_task",
    "mem",
    "time",
    "account",
    "qos",
    "constraint",
    "setup",
    "llm_gres_type",
    "vars",
    "inference_server",
    "inference_image",
    "inference_args",
    "llm_server",
    "llm_image",
    "llm_args",
    "gpu_hour_price",
    "mps",
    "preemptible",
}
SECTIONS = {
    "submit": SUBMIT_KEYS,
    "job": JOB_KEYS,
    "retry": RETRY_KEYS,
    "export": EXPORT_KEYS,
    "quality": QUALITY_KEYS,
    "ocr": OCR_KEYS,
    "templates": {"path"},
    "profiles": None,
}


OPTION_SECTIONS = ("submit", "retry", "export")  # sections whose keys are that command's option defaults
SHOWN = ("submit", "job", "retry", "export", "quality", "ocr")  # `config show`'s tables, in this order


def environment_variable(section: str, key: str) -> str | None:
    """The HPCMARKER_<COMMAND>_<OPTION> variable that overrides `key` of `section` (click's auto_envvar_prefix,
    by the option's parameter name), or None: only the option sections' keys have one. Pure."""
    if section not in OPTION_SECTIONS:
        return None
    name = PARAMETER_NAMES.get(key, key) if section == "submit" else key
    return f"HPCMARKER_{section.upper()}_{name.upper()}"


@dataclass(frozen=True)
class Setting:
    """One effective value of a section and where it comes from (a layer and its file, or a variable)."""

    key: str
    value: Any
    source: str


class ConfigError(UserError):
    """A config file is unreadable or has unknown keys; the message names the file."""


@dataclass
class Layer:
    name: str  # packaged, site, user
    path: Path
    data: dict[str, Any]


@dataclass
class Config:
    layers: list[Layer] = field(default_factory=list)

    def merged(self, section: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for layer in self.layers:
            out.update(layer.data.get(section, {}))
        return out

    def source(self, section: str, key: str) -> str | None:
        """The name of the layer a value comes from (the highest that sets it: packaged, site, user)."""
        found = None
        for layer in self.layers:
            if key in layer.data.get(section, {}):
                found = layer.name
        return found

    def settings(self, section: str, environ: dict[str, str] | None = None) -> list[Setting]:
        """`section`'s effective values, by key, each with its source: the highest layer that sets it, or its
        HPCMARKER_<COMMAND>_<OPTION> variable where that is set (the variable's text, as click reads it)."""
        environ = dict(os.environ) if environ is None else environ
        found = {
            key: Setting(key, value, self.source(section, key) or "-") for key, value in self.merged(section).items()
        }
        for key in SECTIONS[section] or ():
            variable = environment_variable(section, key)
            if variable and variable in environ:
                found[key] = Setting(key, environ[variable], f"environment ({variable})")
        return [found[key] for key in sorted(found)]

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        return self.merged("profiles")

    def profile(self, name: str) -> dict[str, Any]:
        profiles = self.profiles
        if name not in profiles:
            raise ConfigError(f"unknown profile {name!r}; profiles: {', '.join(sorted(profiles))}")
        return profiles[name]

    @property
    def template_path(self) -> list[Path]:
        paths: list[Path] = []
        for layer in reversed(self.layers):  # user folders first
            paths += [Path(p).expanduser() for p in layer.data.get("templates", {}).get("path", [])]
        return paths

    def submit_defaults(self) -> dict[str, Any]:
        """`hpcmarker submit`'s option defaults, by parameter name."""
        return {PARAMETER_NAMES.get(key, key): value for key, value in self.merged("submit").items()}

    def job_defaults(self) -> dict[str, Any]:
        """What a job gets when its profile does not set it: template, gres, cpus_per_task, time."""
        return self.merged("job")

    def default_map(self) -> dict[str, dict[str, Any]]:
        submit = self.submit_defaults()
        return {
            "submit": submit,
            "plan": {key: submit[key] for key in PLAN_KEYS if key in submit},
            "estimate": {key: submit[key] for key in ESTIMATE_KEYS if key in submit},
            "retry": self.merged("retry"),
            "export": self.merged("export"),
        }


def packaged_file() -> Path:
    return Path(__file__).with_name("defaults.toml")


def site_file() -> Path:
    explicit = os.environ.get("HPCMARKER_SITE_CONFIG")
    if explicit:
        path = Path(explicit)
        return path / "config.toml" if path.is_dir() else path
    return Path("/etc/hpcmarker/config.toml")


def user_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hpcmarker" / "config.toml"


def validate(data: dict[str, Any], path: Path) -> None:
    for section, value in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}]; sections: {', '.join(sorted(SECTIONS))}")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        if section == "profiles":
            for name, profile in value.items():
                unknown = sorted(set(profile) - PROFILE_KEYS) if isinstance(profile, dict) else ["(not a table)"]
                if unknown:
                    raise ConfigError(
                        f"{path}: profile {name!r}: unknown keys {', '.join(unknown)}; "
                        f"valid keys: {', '.join(sorted(PROFILE_KEYS))}"
                    )
                if not isinstance(profile.get("preemptible", False), bool):
                    raise ConfigError(f"{path}: profile {name!r}: preemptible must be true or false")
            continue
        unknown = sorted(set(value) - SECTIONS[section])
        if unknown:
            raise ConfigError(
                f"{path}: [{section}] unknown keys {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(SECTIONS[section]))}"
            )


def read_layer(name: str, path: Path) -> Layer | None:
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    validate(data, path)
    return Layer(name, path, data)


def load_config() -> Config:
    layers = [
        read_layer(name, path)
        for name, path in (("packaged", packaged_file()), ("site", site_file()), ("user", user_file()))
    ]
    return Config([layer for layer in layers if layer is not None])
