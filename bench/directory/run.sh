#!/usr/bin/env bash
# Certificate directory benchmark (issue 3): load N real certificates with
# `pki cerdb load-test-data`, serve them with `pki serve --only directory` on loopback, and drive
# exists and fetch for random known addresses with wrk (client and server on this machine).
#
# Usage: bash bench/directory/run.sh [COUNT]         (default 1000000)
# Env:   BENCH_DIR   data directory parent (default /tmp/pki-bench-directory-COUNT; reused if loaded)
#        DURATION    seconds per wrk run (default 20)   CONNECTIONS (default 64)   THREADS (default 1)
#        WARMUP      seconds of exists and then fetch, not reported, before the measured runs
#                    (default 0: the runs start once the server has read the lookup trees into
#                    its page cache, which it does by itself after starting)
#        CACHE_MIB   sled page cache of the loader and the server, [database] cache_mib (default
#                    6144: a million certificates take about 4 GiB on disk)
#        PKI_BIN     the pki binary to measure (default: a release build, in CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-1000000}
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
DIR=${BENCH_DIR:-/tmp/pki-bench-directory-$COUNT}
PORT=${PORT:-18999}
CACHE_MIB=${CACHE_MIB:-6144}
WARMUP=${WARMUP:-0}

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
# PKI_BIN: measure that binary (say, an earlier release, for an A/B run) instead of building one.
if [ -n "${PKI_BIN:-}" ]; then
  PKI="$PKI_BIN"
else
  cargo build --release --bin pki
  PKI="${CARGO_TARGET_DIR:-$PWD/target}/release/pki"
fi
mkdir -p "$DIR"
printf '[server]\nlisten = "127.0.0.1:%s"\n[ca]\npublic_base_url = "http://127.0.0.1:%s"\n[database]\ncache_mib = %s\n' \
  "$PORT" "$PORT" "$CACHE_MIB" > "$DIR/pki.toml"
pki() { "$PKI" --config "$DIR/pki.toml" --data "$DIR/data" "$@"; }

echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), memory: $(free -g | awk '/Mem:/{print $2}') GiB"
echo "wrk: $(wrk -v 2>&1 | head -1)"
echo "load average before the run: $(cut -d" " -f1-3 /proc/loadavg)"
echo

if [ ! -f "$DIR/loaded" ]; then
  echo "## load: pki cerdb load-test-data --count $COUNT (no server running)"
  pki init >/dev/null
  TIMEFORMAT="wall %R s, CPU of the loader: user %U s + sys %S s"
  time pki cerdb load-test-data --count "$COUNT" --batch 5000 2>"$DIR/load.progress"
  echo "load average after the load: $(cut -d" " -f1-3 /proc/loadavg)"
  echo "database on disk: $(du -sh "$DIR/data/db" | cut -f1) ($(du -sb "$DIR/data/db" | cut -f1) bytes)"
  touch "$DIR/loaded"
  echo
fi

echo "## serve: pki serve --only directory --listen 127.0.0.1:$PORT"
start=$(date +%s.%N)
"$PKI" --config "$DIR/pki.toml" --data "$DIR/data" serve --only directory --listen "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.1; done
end=$(date +%s.%N)
echo "ready after $(awk "BEGIN{printf \"%.1f\", $end - $start}") s (includes the hashed-address index catch-up)"
# The server reads the lookup trees into its page cache in the background after it starts
# (CertDb::warm_cache); the measured runs start once that is done.
for _ in $(seq 6000); do
  grep -q "page cache warmed" "$DIR/serve.log" && break
  kill -0 "$SERVER" 2>/dev/null || { echo "pki serve exited: $(tail -3 "$DIR/serve.log")" >&2; exit 1; }
  sleep 0.1
done
warmed=$(date +%s.%N)
echo "page cache warmed after $(awk "BEGIN{printf \"%.1f\", $warmed - $start}") s: $(grep -o 'page cache warmed.*' "$DIR/serve.log" | head -1)"
KEY=$(pki apikey create --name "bench-$(date +%s%N)" --rate 1000000000 2>/dev/null)
echo

TICKS=$(getconf CLK_TCK)
server_cpu() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
if [ "$WARMUP" -gt 0 ]; then
  for op in exists fetch; do
    DIR_COUNT=$COUNT DIR_KEY=$KEY DIR_OP=$op \
      wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/directory/lookup.lua "http://127.0.0.1:$PORT" |
      grep RESULT | sed "s/^/warm-up ($WARMUP s, not reported): /"
  done
  echo
fi
for op in exists fetch; do
  echo "## $op: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s (random of $COUNT known addresses)"
  DIR_COUNT=$COUNT DIR_KEY=$KEY DIR_OP=$op DIR_VERIFY=1 \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s bench/directory/lookup.lua "http://127.0.0.1:$PORT" | grep RESULT | sed 's/^/verify: /'
  echo "load average before: $(cut -d" " -f1-3 /proc/loadavg)"
  before=$(server_cpu)
  out=$(DIR_COUNT=$COUNT DIR_KEY=$KEY DIR_OP=$op \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/directory/lookup.lua "http://127.0.0.1:$PORT")
  after=$(server_cpu)
  echo "$out" | grep -E "RESULT|Latency|Requests/sec|^ +(50|75|90|99)%"
  requests=$(echo "$out" | sed -n 's/.*RESULT.* requests=\([0-9]*\).*/\1/p')
  echo "server CPU: $(awk "BEGIN{printf \"%.1f\", ($after - $before) * 1e6 / $TICKS / $requests}") µs per request"
  echo
done
echo "server RSS: $(ps -o rss= -p $SERVER | awk '{printf "%.0f MiB", $1/1024}')"
