#!/usr/bin/env bash
# The fault-injection suite of issue 7 on the real Slurm cluster: tests/slurm/test_fault_suite.py, with the
# disk-full, wedged-dependency and item-limit tests. Every scenario appends its numbers to
# docs/fault-injection.jsonl; scripts/fault_table.py then renders docs/fault-injection.md.
# Needs the test cluster (scripts/slurm-test-cluster.sh up, as root) and ../shared/corpus.
# Extra arguments go to pytest. Exits with pytest's status (the table is written either way).
set -uo pipefail
cd "$(dirname "$0")/.."
cluster_conf="${HPCMARKER_SLURM_DIR:-/var/tmp/hpcmarker-slurm}/slurm.conf"
if [ -z "${SLURM_CONF:-}" ] && [ -f "$cluster_conf" ]; then
  export SLURM_CONF="$cluster_conf"
fi
# no cluster, no corpus, or not root (the disk-full and OOM-killer scenarios): fail, do not skip
export HPCMARKER_REQUIRE="${HPCMARKER_REQUIRE:-slurm,root,corpus}"
results=docs/fault-injection.jsonl
junit="$(mktemp --suffix=.xml)"
trap 'rm -f "$junit"' EXIT
: > "$results"
export HPCMARKER_FAULT_RESULTS="$PWD/$results"
start=$(date +%s)
.venv/bin/python -m pytest -v -p no:cacheprovider --junitxml="$junit" tests/slurm/test_fault_suite.py \
  tests/runtime/test_storage.py tests/slurm/test_slurm_wedge.py tests/runtime/test_item_limits.py "$@"
status=$?
.venv/bin/python scripts/fault_table.py "$results" docs/fault-injection.md --junit "$junit" \
  --seconds "$(( $(date +%s) - start ))"
exit $status
