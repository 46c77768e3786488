#!/usr/bin/env bash
# Run the marker engine tests against each supported marker-pdf line, each in its own venv
# (cached in $HPCMARKER_VENVS, default /var/tmp/hpcmarker-venvs). torch is installed first at
# 2.13.0 (a CPU build here) so pip does not pull multi-GB CUDA wheels; marker 2.0 needs
# torchvision pinned to 0.28.0 for the same reason (newer torchvision replaces torch).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venvs=${HPCMARKER_VENVS:-/var/tmp/hpcmarker-venvs}
quiet() { grep -v "^WARNING: Location" || true; }
status=0
for spec in "1.10.2|" "2.0.0|torchvision==0.28.0"; do
  version=${spec%%|*}; extra=${spec#*|}
  venv="$venvs/marker-$version"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import marker" 2>/dev/null; then
    echo "== creating $venv"
    rm -rf "$venv"; python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip 2>&1 | quiet
    "$venv/bin/pip" install -q torch==2.13.0 2>&1 | quiet
    "$venv/bin/pip" install -q "marker-pdf==$version" $extra torch==2.13.0 2>&1 | quiet
  fi
  "$venv/bin/pip" install -q -e "$root[test]" torch==2.13.0 2>&1 | quiet
  echo "== marker-pdf $version"
  HPCMARKER_REQUIRE=marker "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/engines/test_marker_engine.py \
    || status=1  # marker-pdf must be there: its tests fail, not skip, without it
  HPCMARKER_REQUIRE=marker "$venv/bin/python" -m pytest -q -p no:cacheprovider -m marker tests/admin \
    tests/engines/test_marker_formats.py tests/engines/test_marker_llm_wait.py tests/llm/test_llm_check.py \
    || status=1  # every other test that needs the real marker (no weights here): doctor, prefetch, formats, LLM wait and check
done
exit $status
