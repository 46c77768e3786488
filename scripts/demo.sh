#!/usr/bin/env bash
# Set up, then convert the sample PDFs in examples/pdfs to Markdown in _out/demo.
# With Slurm on PATH this submits to the cluster; without it, it runs here and waits.
# The demo uses the model-free `text` engine: marker needs its weights (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-_out/demo}
.venv/bin/hpcmarker submit --pdfs examples/pdfs --out "$out" --gpus 2 --engine text --cpus-per-task 1 --time 10
echo
echo "Markdown files:"
find "$out" -name '*.md' -not -path '*/.hpcmarker/*' | sort
