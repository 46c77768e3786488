"""Workers per GPU for `--workers-per-gpu auto` (hpc_marker/sizing.py): the pure choice, the GPU
memory reader against a fake `nvidia-smi` (and a fake torch probe), and the logged choice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpc_marker.engines import marker as marker_engine
from hpc_marker.runtime import sizing
from hpc_marker.runtime.sizing import GpuMemory, choose_workers, derive_workers, parse_nvidia_smi, read_gpu_memory

GB = 1024.0


@pytest.mark.parametrize(
    ("engine", "major", "cpus", "gpu", "workers", "binding"),
    [
        ("text", None, 6, None, 6, "one worker per CPU"),
        ("benchmark", None, 32, None, 8, "cap 8"),
        ("marker", 2, 8, None, 4, "thin clients of the inference server: 4 by CPUs (8 CPUs, 2 per worker)"),
        ("marker", 2, 1, GpuMemory(80 * GB, 1 * GB), 1, "1 by CPUs"),  # GPU memory is the server's
        ("marker", 2, 64, None, 8, "cap 8"),
        ("marker", 1, 16, GpuMemory(24 * GB, 24 * GB), 6, "6 by GPU memory (24.0 of 24.0 GB free, 3.5 GB per worker)"),
        ("marker", 1, 8, GpuMemory(80 * GB, 78 * GB), 4, "4 by CPUs"),
        ("marker", 1, 16, GpuMemory(16 * GB, 3 * GB), 1, "1 by GPU memory"),  # at least one
        ("marker", 1, 6, None, 3, "GPU memory unknown"),
        ("marker", None, 16, GpuMemory(40 * GB, 40 * GB), 8, "11 by GPU memory"),  # unknown version: 1.x rules
    ],
)
def test_derive_workers(engine, major, cpus, gpu, workers, binding):
    got, why = derive_workers(engine, major, cpus, gpu)
    assert got == workers and binding in why


def test_derive_workers_cap():
    assert derive_workers("marker", 1, 64, GpuMemory(141 * GB, 140 * GB), cap=12)[0] == 12
    assert derive_workers("text", None, 0, None, cap=0)[0] == 1


ROWS = "0, GPU-aaaa-1111, 81559, 81000\n1, GPU-bbbb-2222, 81559, 40000\n"


def test_parse_nvidia_smi_picks_the_visible_gpu():
    assert parse_nvidia_smi(ROWS, "1") == GpuMemory(81559, 40000)
    assert parse_nvidia_smi(ROWS, "GPU-bbbb") == GpuMemory(81559, 40000)
    assert parse_nvidia_smi(ROWS, None) == GpuMemory(81559, 81000)  # unset: the first
    assert parse_nvidia_smi(ROWS, "5") is None  # not there, and two to choose from
    assert parse_nvidia_smi(ROWS.splitlines()[1], "0") == GpuMemory(81559, 40000)  # renumbered by the cgroup
    assert parse_nvidia_smi(ROWS, "") is None
    assert parse_nvidia_smi("No devices were found\n", None) is None
    assert parse_nvidia_smi("0, GPU-x, [N/A], [N/A]\n", "0") is None


def test_visible_gpu():
    assert sizing.visible_gpu({}) is None
    assert sizing.visible_gpu({"CUDA_VISIBLE_DEVICES": "2,3"}) == "2"
    for none in ("", "-1", "NoDevFiles"):
        assert sizing.visible_gpu({"CUDA_VISIBLE_DEVICES": none}) == ""


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_reader_asks_nvidia_smi_for_the_visible_gpu(tmp_path):
    args = tmp_path / "args"
    rows = ROWS.replace("\n", "\\n")
    _script(tmp_path / "bin", "nvidia-smi", f'echo "$@" > {args}\nprintf "{rows}"')
    environ = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "1"}
    assert read_gpu_memory(environ) == GpuMemory(81559, 40000)
    assert args.read_text().split() == [
        "--query-gpu=index,uuid,memory.total,memory.free",
        "--format=csv,noheader,nounits",
    ]
    args.unlink()
    assert read_gpu_memory(dict(environ, CUDA_VISIBLE_DEVICES="")) is None and not args.exists()  # no GPU: no call
    _script(tmp_path / "bin", "nvidia-smi", 'echo "NVIDIA-SMI has failed" >&2\nexit 9')
    assert read_gpu_memory(environ) is None


def test_reader_falls_back_to_a_torch_probe_without_nvidia_smi(tmp_path):
    environ = {"PATH": str(tmp_path / "empty"), "CUDA_VISIBLE_DEVICES": "0"}
    python = _script(tmp_path / "py", "python", 'echo "[1073741824, 4294967296]"')
    assert read_gpu_memory(environ, python=str(python)) == GpuMemory(total_mb=4096, free_mb=1024)
    python = _script(tmp_path / "py", "python", "echo null")  # torch without CUDA
    assert read_gpu_memory(environ, python=str(python)) is None
    assert read_gpu_memory(environ, python=str(tmp_path / "no-such-python")) is None


def test_choose_workers_logs_one_line(monkeypatch, log_lines):
    assert choose_workers(3, "marker", 8) == 3
    assert log_lines()[-1] == "workers per GPU: 3 (requested)"
    assert choose_workers(None, "text", 5) == 5
    assert log_lines()[-1].startswith("workers per GPU: 5 (auto: engine text runs on CPUs only")

    monkeypatch.setattr(marker_engine, "marker_version", lambda: "1.10.2")
    assert choose_workers(0, "marker", 16, gpu_reader=lambda: GpuMemory(24 * GB, 12 * GB)) == 3
    assert log_lines()[-1] == (
        "workers per GPU: 3 (auto: marker 1.x: 3 by GPU memory (12.0 of 24.0 GB free, 3.5 GB per "
        "worker), 8 by CPUs (16 CPUs, 2 per worker), cap 8)"
    )

    def no_reading():
        raise AssertionError("marker 2.x does not size by GPU memory")

    monkeypatch.setattr(marker_engine, "marker_version", lambda: "2.0.0")
    assert choose_workers(None, "marker", 16, gpu_reader=no_reading) == 8
    assert "thin clients" in log_lines()[-1] and "\n" not in log_lines()[-1]


def test_cli_workers_per_gpu_takes_auto_or_a_count(tmp_path):
    from click.testing import CliRunner

    from hpc_marker.cli import cli
    from hpc_marker.config.types import WORKERS

    assert [WORKERS.convert(v, None, None) for v in ("auto", "AUTO", "3", 2)] == [0, 0, 3, 2]  # 2: from a config
    for bad in ("0", "zero", "-1"):
        result = CliRunner().invoke(
            cli, ["submit", "--pdfs", str(tmp_path), "--out", str(tmp_path / "o"), "--workers-per-gpu", bad]
        )
        assert result.exit_code == 2 and "use auto or a number of at least 1" in result.output
