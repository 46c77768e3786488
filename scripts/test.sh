#!/usr/bin/env bash
# Set up, then run the test suite; the arguments go to pytest.
#
#   bash scripts/test.sh            everything that can run here. The Slurm tests run when a cluster answers:
#                                   the local test cluster (scripts/slurm-test-cluster.sh up, as root) is
#                                   picked up automatically (SLURM_CONF).
#   bash scripts/test.sh --split    everything, as two pytest runs at once: the Slurm tests (-m slurm, one process),
#                                   which mostly wait on the scheduler, beside all the others (on pytest-xdist
#                                   workers, as --fast); each has its own log and
#                                   temporary folder, printed when it ends; fails when either does (CI uses it).
#                                   Where HPCMARKER_SLURM_CONFS lists several test clusters' slurm.conf (colon-
#                                   separated; scripts/slurm-test-cluster.sh with HPCMARKER_SLURM_INSTANCE=2 ...),
#                                   the Slurm tests run on one xdist worker per cluster, a test file at a time
#                                   (tests/conftest.py points each worker at its own cluster).
#   bash scripts/test.sh --fast     the fast tier: -m "not slow and not slurm" (a later -m of yours wins), on
#                                   pytest-xdist workers (as many as cores, at most 4; -n 0 of yours: one process).
#                                   It never reaches a Slurm cluster (SLURM_CONF is not set for it) unless
#                                   HPCMARKER_REQUIRE names slurm or your -m asks for slurm.
#
# scripts/setup.sh (the editable install) runs when pyproject.toml or setup.sh changed since it last ran here,
# or HPCMARKER_EXTRAS asks for more; always on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.hpcmarker-setup
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ] ||
  [ -n "${HPCMARKER_EXTRAS:-}" ] || [ ! -x .venv/bin/python ]; then
  bash scripts/setup.sh >/dev/null
  touch "$stamp"
fi

fast=0
split=0
args=()
asks_slurm=0  # HPCMARKER_REQUIRE names slurm (or all), or an -m of the caller's mentions it other than as "not slurm"
require=${HPCMARKER_REQUIRE:-}
case ",${require//[[:space:]]/}," in *,slurm,* | *,all,*) asks_slurm=1 ;; esac
previous=""
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then
    fast=1
    continue
  fi
  if [ "$arg" = "--split" ]; then
    split=1
    continue
  fi
  expression=""
  case "$previous" in -m) expression=$arg ;; esac
  case "$arg" in -m?*) expression=${arg#-m} ;; esac
  if [[ "$expression" == *slurm* && "$expression" != *"not slurm"* ]]; then
    asks_slurm=1
  fi
  args+=("$arg")
  previous=$arg
done

cluster_conf="${HPCMARKER_SLURM_DIR:-/var/tmp/hpcmarker-slurm}/slurm.conf"
if [ -z "${SLURM_CONF:-}" ] && [ -f "$cluster_conf" ] && { [ "$fast" = 0 ] || [ "$asks_slurm" = 1 ]; }; then
  export SLURM_CONF="$cluster_conf"
fi
# The tests without Slurm mostly wait on the processes they start: pytest-xdist (the test extras) runs them on as
# many workers as cores, at most 4 (an -n of the caller's, later on the command line, wins). The Slurm tests stay in
# one process: some of them take the whole test cluster (a node failure, all 4 GPUs).
parallel=()
workers=$(nproc 2>/dev/null || echo 2)
[ "$workers" -gt 4 ] && workers=4
if .venv/bin/python -c "import xdist" 2>/dev/null; then
  parallel=(-n "$workers")
fi
if [ "$fast" = 1 ]; then
  exec .venv/bin/python -m pytest -m "not slow and not slurm" ${parallel[@]+"${parallel[@]}"} ${args[@]+"${args[@]}"}
fi
if [ "$split" = 1 ]; then
  logs=$(mktemp -d)
  # A background command of a script (no job control) starts with SIGINT ignored, and that would reach every run
  # the tests start: each pytest gets SIGINT back at its default first, so Ctrl-C stops both (and tests of Ctrl-C
  # see it).
  pytest_with_sigint=(.venv/bin/python -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, "-m", "pytest", *sys.argv[1:]])')
  clusters=()
  IFS=: read -r -a clusters <<<"${HPCMARKER_SLURM_CONFS:-}"
  per_cluster=()
  if [ "${#clusters[@]}" -gt 1 ] && [ ${#parallel[@]} -gt 0 ]; then
    per_cluster=(-n "${#clusters[@]}" --dist loadfile)
  fi
  "${pytest_with_sigint[@]}" -m slurm ${per_cluster[@]+"${per_cluster[@]}"} --basetemp="$logs/tmp-slurm" \
    ${args[@]+"${args[@]}"} >"$logs/slurm.log" 2>&1 &
  slurm_pid=$!
  "${pytest_with_sigint[@]}" -m "not slurm" ${parallel[@]+"${parallel[@]}"} --basetemp="$logs/tmp-rest" \
    ${args[@]+"${args[@]}"} >"$logs/rest.log" 2>&1 &
  rest_pid=$!
  # each one's exit code; 5 (no test selected: a -k of yours picked only the other half) counts as passed
  rest=0 slurm=0
  wait "$rest_pid" || rest=$?
  echo "=== the tests without Slurm (-m 'not slurm') ==="
  cat "$logs/rest.log"
  wait "$slurm_pid" || slurm=$?
  [ "$rest" = 5 ] && rest=0
  [ "$slurm" = 5 ] && slurm=0
  status=$((rest ? rest : slurm))
  echo "=== the Slurm tests (-m slurm) ==="
  cat "$logs/slurm.log"
  rm -rf "$logs"
  exit "$status"
fi
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
