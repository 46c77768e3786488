"""The wheel ships the sbatch templates that the repository keeps once, at its top (templates/), and an
installed hpcmarker finds them there.

The wheel is built with the project's own build backend (hatchling, from pyproject.toml), unpacked into
an empty folder, and hpcmarker is run from that folder alone (PYTHONPATH first, so the repository's own
package is not the one imported).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"


def shipped_files() -> list[str]:
    """The repository's template files, relative to templates/ (what the wheel must carry)."""
    return sorted(
        str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling", reason="hatchling (the build backend, in the test extra) builds the wheel")
    out = tmp_path_factory.mktemp("wheel")
    build = "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))"
    built = subprocess.run(
        [sys.executable, "-c", build, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert built.returncode == 0, built.stderr
    return out / built.stdout.strip().splitlines()[-1]


def test_the_wheel_carries_the_top_level_templates_as_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert shipped_files(), f"no templates in {TEMPLATES}"
    missing = [f for f in shipped_files() if f"hpc_marker/templates/{f}" not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    assert not [n for n in names if n.startswith("templates/")], "templates must go inside the package"


def test_an_installed_wheel_lists_and_renders_its_shipped_templates(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k not in {"HPCMARKER_TEMPLATE_PATH", "PYTHONPATH"}}
    env |= {
        "PYTHONPATH": str(site),
        "COLUMNS": "400",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HPCMARKER_SITE_CONFIG": str(tmp_path / "site-config"),
    }

    def hpcmarker(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "hpc_marker", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    listed = hpcmarker("templates", "list")
    for name in ("generic", "apptainer"):
        assert str(site / "hpc_marker" / "templates" / name) in listed, listed
    assert str(ROOT) not in listed, listed
    shown = hpcmarker("templates", "show", "generic")
    assert f"### {site / 'hpc_marker' / 'templates' / 'generic' / 'convert.sbatch.j2'}" in shown
    rendered = hpcmarker("templates", "render", "generic", "--role", "convert")  # _parts/ included
    assert "#SBATCH --array=" in rendered and "#SBATCH --comment=" in rendered, rendered
