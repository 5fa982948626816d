#!/usr/bin/env bash
# Directory lookups while the same server issues: exists for random known addresses with wrk,
# once with nothing else running and once while `pki cerdb load-test-data` issues through the
# server's admin socket, for each batch size given. sled runs each batch's transaction under a
# lock every other read of the database waits for, so the lookup latency during a load shows how
# long those waits are, on top of sharing the two cores.
#
# Usage: bash bench/directory/during-load.sh [COUNT]     (default 10000 known addresses)
# Env:   BATCHES    batch sizes of the concurrent loads (default "5000 500")
#        DURATION   seconds per wrk run (default 15)   CONNECTIONS (default 64)
#        LOAD       certificates per concurrent load (default 300000: outlasts the wrk run)
#        PKI_BIN    the pki binary to measure (default: a release build, in CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-10000}
BATCHES=${BATCHES:-5000 500}
DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
LOAD=${LOAD:-300000}
DIR=/tmp/pki-bench-during-load-$COUNT
PORT=${PORT:-18998}

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
# PKI_BIN: measure that binary (say, an earlier release, for an A/B run) instead of building one.
if [ -n "${PKI_BIN:-}" ]; then
  PKI="$PKI_BIN"
else
  cargo build --release --bin pki
  PKI="${CARGO_TARGET_DIR:-$PWD/target}/release/pki"
fi
pki() { "$PKI" --config "$DIR/pki.toml" --data "$DIR/data" "$@"; }
SERVER=
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null || true' EXIT

lookups() {
  DIR_COUNT=$COUNT DIR_KEY=$KEY DIR_OP=exists \
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/directory/lookup.lua "http://127.0.0.1:$PORT" |
    grep -E "RESULT|Latency  |Requests/sec|^ +(50|90|99)%"
}

echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), wrk: $(wrk -v 2>&1 | head -1)"
# Each batch size on a fresh data directory and server: a run after another load measured slower
# (the database grown, sled cleaning its log), which would mix two effects.
for batch in $BATCHES; do
  rm -rf "$DIR" && mkdir -p "$DIR"
  printf '[server]\nlisten = "127.0.0.1:%s"\n[ca]\npublic_base_url = "http://127.0.0.1:%s"\n' "$PORT" "$PORT" > "$DIR/pki.toml"
  pki init >/dev/null 2>&1
  pki cerdb load-test-data --count "$COUNT" 2>/dev/null
  "$PKI" --config "$DIR/pki.toml" --data "$DIR/data" serve >"$DIR/serve.log" 2>&1 &
  SERVER=$!
  until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.1; done
  for _ in $(seq 600); do grep -q "page cache warmed" "$DIR/serve.log" && break; sleep 0.1; done
  KEY=$(pki apikey create --name bench --rate 1000000000 2>/dev/null)
  echo
  echo "## batch $batch — load average before: $(cut -d" " -f1-3 /proc/loadavg)"
  echo "### exists, nothing else running"
  lookups
  echo "### exists while load-test-data --batch $batch issues through the server"
  pki cerdb load-test-data --count "$LOAD" --start 10000000 --batch "$batch" 2>"$DIR/load.log" &
  LOADER=$!
  sleep 2
  lookups
  kill "$LOADER" 2>/dev/null || true
  wait "$LOADER" 2>/dev/null || true
  echo "loader: $(tr '\r' '\n' < "$DIR/load.log" | grep -v '^$' | tail -1)"
  kill "$SERVER" && wait "$SERVER" 2>/dev/null || true
  SERVER=
done
