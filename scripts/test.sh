#!/usr/bin/env bash
# Set up, then run the test suite. The Slurm tests run when a cluster answers: the local test
# cluster (scripts/slurm-test-cluster.sh up, as root) is picked up automatically.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cluster_conf="${HPCMARKER_SLURM_DIR:-/var/tmp/hpcmarker-slurm}/slurm.conf"
if [ -z "${SLURM_CONF:-}" ] && [ -f "$cluster_conf" ]; then
  export SLURM_CONF="$cluster_conf"
fi
exec .venv/bin/python -m pytest "$@"
