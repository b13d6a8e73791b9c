#!/usr/bin/env bash
# Orion benchmark: `make bench` (after `make build`).
#
#   bench/run.sh                      Redis 7.0.15 vs make, ccache, sccache, distcc; writes bench/RESULTS.md
#                                     and bench/results.json (roughly 1.5 hours on 2 cores: run it on an idle machine)
#   BENCH_PROJECT=fixtures/make-project BENCH_MAKEARGS= BENCH_REPS=1 bench/run.sh
#                                     quick mode: checks the harness end to end on a small project, with
#                                     small synthetic numbers; writes /tmp/bench-quick.md (+ .json)
#
# Environment (all optional):
#   BENCH_REPS (3)            repetitions; medians with min and max are reported
#   BENCH_PROJECT             project to build instead of Redis (quick mode)
#   BENCH_MAKEARGS            make arguments (default MALLOC=libc; empty in quick mode)
#   BENCH_EDIT_FILE           .c file edited in the `edit` scenario (src/t_string.c; lib/add.c for the fixture)
#   BENCH_TOUCH_FILE          header touched in the `touch` scenario (src/server.h; include/util.h for the fixture)
#   BENCH_OUTPUTS             files every build must produce (Redis's three binaries by default)
#   BENCH_OUT / BENCH_JSON    report and raw-numbers files
#   BENCH_TOOLS               subset of: make ccache sccache distcc orion orion-cluster
#   BENCH_SCENARIOS           subset of: cold warm noop edit touch
#   BENCH_CMD_TIMEOUT (3600)  seconds before one build is killed and counted as failed
#   BENCH_SKIP_MEMORY=1, BENCH_SKIP_SCALE=1
#   BENCH_SCALE_DISPATCH_ACTIONS (10000), BENCH_SCALE_DISPATCH_NODES (4), BENCH_SCALE_DISPATCH_SLOTS (8),
#   BENCH_SCALE_DISPATCH_SHAPE (flat|fanin), BENCH_SCALE_DISPATCH_FAKE (1: also to fake nodes, the head alone),
#   BENCH_SCALE_SLEEP_ACTIONS (2000: the synthetic C/C++ DAG),
#   BENCH_SCALE_SLEEP_NODES ("6 32"), BENCH_SCALE_SLEEP_SLOTS (4), BENCH_SCALE_SEED (1),
#   BENCH_SCALE_WARMUP (1: earlier builds the head learns durations from), BENCH_SCALE_SANDBOX (off|auto),
#   BENCH_SCALE_TIMEOUT (1800)
#   BENCH_TIMEOUT (21600)     seconds before the whole benchmark is stopped
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO"
WORK=$REPO/bench/work
mkdir -p "$WORK"

[ -f dist/orion.mjs ] || { echo "bench: dist/ is missing: run 'make build' (or 'make bench')" >&2; exit 1; }

# Every process the benchmark starts is listed in $PIDS (each a process-group leader) and killed
# here on any exit; sccache's server is stopped through its port.
PIDS=$WORK/pids
: >"$PIDS"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "${DRIVER:-}" ] && kill -0 "$DRIVER" 2>/dev/null; then
    kill -TERM "$DRIVER" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$DRIVER" 2>/dev/null || break; sleep 0.2; done
  fi
  if [ -s "$PIDS" ]; then
    while read -r pid; do
      [ -n "$pid" ] || continue
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done <"$PIDS"
  fi
  if [ -f "$WORK/run/sccache.port" ] && command -v sccache >/dev/null; then
    SCCACHE_SERVER_PORT=$(cat "$WORK/run/sccache.port") timeout 20 sccache --stop-server >/dev/null 2>&1 || true
    rm -f "$WORK/run/sccache.port"
  fi
  rm -f "$PIDS"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

if [ -n "${BENCH_PROJECT:-}" ]; then
  export BENCH_QUICK=${BENCH_QUICK:-1}
  export BENCH_MAKEARGS=${BENCH_MAKEARGS-}
  export BENCH_OUT=${BENCH_OUT:-/tmp/bench-quick.md}
else
  export BENCH_PROJECT
  BENCH_PROJECT=$(bash scripts/fetch-redis.sh "$WORK/redis-src" | tail -1)
  export BENCH_PROJECT_LABEL=${BENCH_PROJECT_LABEL:-"Redis $(sed -n 's/^#define REDIS_VERSION "\(.*\)"/\1/p' "$BENCH_PROJECT/src/version.h") (Debian source package)"}
  export BENCH_MAKEARGS=${BENCH_MAKEARGS-MALLOC=libc}
  export BENCH_OUT=${BENCH_OUT:-$REPO/bench/RESULTS.md}
fi
if [ -z "${BENCH_JSON:-}" ]; then
  if [ "$BENCH_OUT" = "$REPO/bench/RESULTS.md" ]; then BENCH_JSON=$REPO/bench/results.json; else BENCH_JSON=${BENCH_OUT%.md}.json; fi
fi
export BENCH_JSON BENCH_PIDS_FILE=$PIDS BENCH_WORK=$WORK BENCH_PEERS_STATUS=$WORK/peers.status
if [ -f "$BENCH_PROJECT/src/redis-server" ] || [ -f "$BENCH_PROJECT/src/server.o" ]; then
  echo "bench: $BENCH_PROJECT has build outputs in it; every run copies it, so it must be pristine" >&2
  exit 1
fi

bash "$HERE/install-peers.sh" "$BENCH_PEERS_STATUS" || true

timeout --signal=TERM --kill-after=60 "${BENCH_TIMEOUT:-21600}" node "$HERE/bench.mjs" &
DRIVER=$!
wait "$DRIVER"
