#!/usr/bin/env bash
# Create .venv (once) and install hpcmarker into it, editable, with the test extras.
# Set HPCMARKER_EXTRAS=test,marker to also install marker-pdf (several GB with torch).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install --quiet -e ".[${HPCMARKER_EXTRAS:-test}]" 2>&1 | grep -v "^WARNING: Location" || true
touch .venv/.hpcmarker-setup  # scripts/test.sh sets up again only when pyproject.toml or this file is newer
.venv/bin/hpcmarker --version
