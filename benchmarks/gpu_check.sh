#!/usr/bin/env bash
# The GPU proof (issue 24, item 5): local runs on one NVIDIA GPU with 1, 2 and 4 workers, --mps off and on, each
# worker doing real CUDA work per page (benchmarks/gpu_workload.py, a small torch workload standing in for marker's
# models), against a bare loop of the same work: pages/s, GPU memory per worker, and that each worker saw exactly
# the GPU it was given. Results: OUT/gpu_check.json and a Markdown table on stdout (for docs/gpu.md).
#
#   bash benchmarks/gpu_check.sh [--gpu N] [--pages 240] [--out DIR]    # on a machine with an NVIDIA GPU
#   bash benchmarks/gpu_check.sh --dry-run                              # anywhere: the plumbing, on the CPU
#
# PYTHON (default: the repository's .venv, else python3) must import hpc_marker and, for the real check, torch
# with CUDA. Without a GPU (and without --dry-run) it says so in one line and exits 2.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
fail() { echo "gpu_check: $*" >&2; exit 2; }

dry_run=0 gpu=0 previous=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        -h|--help) exec "$PYTHON" "$root/benchmarks/gpu_check.py" --help ;;
    esac
    [ "$previous" = "--gpu" ] && gpu="$arg"
    previous="$arg"
done

"$PYTHON" -c "import hpc_marker" 2>/dev/null || fail "$PYTHON cannot import hpc_marker (set PYTHON, or run scripts/setup.sh)"
if [ "$dry_run" = 0 ]; then
    command -v nvidia-smi >/dev/null || fail "no NVIDIA GPU here: nvidia-smi is not on PATH (--dry-run checks the plumbing on the CPU)"
    nvidia-smi -i "$gpu" -L >/dev/null 2>&1 || fail "no NVIDIA GPU $gpu here: nvidia-smi -i $gpu -L failed (--dry-run checks the plumbing on the CPU)"
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
        || fail "$PYTHON has no torch with CUDA (pip install torch into it, or set PYTHON)"
fi
exec "$PYTHON" "$root/benchmarks/gpu_check.py" "$@"
