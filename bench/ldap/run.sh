#!/usr/bin/env bash
# LDAP directory benchmark (issue 20): equality searches per second at COUNT certificates with
# 64 concurrent clients on loopback, beside the HTTP directory's `exists` rate on the same server
# in the same run. Loads COUNT real certificates with `pki cerdb load-test-data`, serves them with
# `pki serve --only directory,ldap`, then alternates, ROUNDS times:
#   - HTTP: wrk -t1 -cCONNECTIONS with bench/directory/lookup.lua (GET .../exists?email=load-<i>@...)
#   - LDAP: the load client crates/ldap/benches/load.rs (one thread, CONNECTIONS connections bound
#     with an API key, (mail=load-<i>@loadtest.example) returning `mail`), and once per round
#     the same returning `userCertificate;binary` (the certificates' DER, as mail clients ask).
# Client and server share the machine's cores.
#
# Usage: bash bench/ldap/run.sh [COUNT]             (default 1000000)
# Env:   BENCH_DIR (default /tmp/pki-bench-ldap-COUNT; reused when loaded)   DURATION (15 s)
#        CONNECTIONS (64)   ROUNDS (2)   CACHE_MIB ([database] cache_mib, 6144)
#        CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-1000000}
DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-2}
CACHE_MIB=${CACHE_MIB:-6144}
DIR=${BENCH_DIR:-/tmp/pki-bench-ldap-$COUNT}
PORT=${PORT:-18997}
LDAP_PORT=${LDAP_PORT:-18389}
BASE="ou=certificates,dc=bank,dc=example"
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
case "$TARGET" in /*) ;; *) TARGET="$PWD/$TARGET" ;; esac

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release --bin pki
cargo bench -q -p ldap-directory --bench load --no-run
PKI="$TARGET/release/pki"
mkdir -p "$DIR"
printf '[server]\nlisten = "127.0.0.1:%s"\n[ca]\npublic_base_url = "http://127.0.0.1:%s"\n[database]\ncache_mib = %s\n[ldap]\nlisten = "127.0.0.1:%s"\nbase_dn = "%s"\n' \
  "$PORT" "$PORT" "$CACHE_MIB" "$LDAP_PORT" "$BASE" > "$DIR/pki.toml"
pki() { "$PKI" --config "$DIR/pki.toml" --data "$DIR/data" "$@"; }

echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), memory: $(free -g | awk '/Mem:/{print $2}') GiB"
echo "wrk: $(wrk -v 2>&1 | head -1)"
echo "load average before: $(cut -d" " -f1-3 /proc/loadavg)"
echo

if [ ! -f "$DIR/loaded" ]; then
  echo "## load: pki cerdb load-test-data --count $COUNT --batch 5000 (no server running)"
  pki init >/dev/null
  TIMEFORMAT="wall %R s"
  time pki cerdb load-test-data --count "$COUNT" --batch 5000 2>"$DIR/load.progress"
  echo "database on disk: $(du -sh "$DIR/data/db" | cut -f1)"
  touch "$DIR/loaded"
  echo
fi

echo "## serve: pki serve --only directory,ldap (HTTP 127.0.0.1:$PORT, LDAP 127.0.0.1:$LDAP_PORT)"
"$PKI" --config "$DIR/pki.toml" --data "$DIR/data" serve --only directory,ldap >"$DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do
  kill -0 "$SERVER" 2>/dev/null || { echo "pki serve exited: $(tail -3 "$DIR/serve.log")" >&2; exit 1; }
  sleep 0.1
done
for _ in $(seq 6000); do
  grep -q "page cache warmed" "$DIR/serve.log" && break
  sleep 0.1
done
echo "$(grep -o 'page cache warmed.*' "$DIR/serve.log" | head -1)"
NAME="bench-$(date +%s%N)"
KEY=$(pki apikey create --name "$NAME" --rate 1000000000 2>/dev/null)
echo

TICKS=$(getconf CLK_TCK)
server_cpu() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
measure() { # label, command...
  local label=$1; shift
  local before after out requests
  before=$(server_cpu)
  out=$("$@")
  after=$(server_cpu)
  requests=$(echo "$out" | sed -n 's/.*RESULT.* requests=\([0-9]*\).*/\1/p')
  echo "$label: $(echo "$out" | grep RESULT) server_cpu_us=$(awk "BEGIN{printf \"%.1f\", ($after - $before) * 1e6 / $TICKS / $requests}")"
}
http_exists() {
  DIR_COUNT=$COUNT DIR_KEY=$KEY DIR_OP=exists DIR_VERIFY=${VERIFY:-0} \
    wrk -t1 -c"$CONNECTIONS" -d"${1}s" --latency -s bench/directory/lookup.lua "http://127.0.0.1:$PORT"
}
ldap_search() {
  LDAP_ADDR=127.0.0.1:$LDAP_PORT LDAP_BASE=$BASE LDAP_KEY=$KEY LDAP_KEY_NAME=$NAME LDAP_COUNT=$COUNT \
    LDAP_CONNECTIONS=$CONNECTIONS LDAP_SECONDS=$1 LDAP_ATTRS=$2 cargo bench -q -p ldap-directory --bench load
}
echo "## checks (3 s each): every HTTP answer 200 with exists:true, every LDAP search one entry"
VERIFY=1 http_exists 3 | grep RESULT
ldap_search 3 mail | grep RESULT
echo
for round in $(seq "$ROUNDS"); do
  echo "## round $round (${DURATION} s each, $CONNECTIONS connections) — load average $(cut -d" " -f1-3 /proc/loadavg)"
  measure "http exists" http_exists "$DURATION"
  measure "ldap mail" ldap_search "$DURATION" mail
  measure "ldap userCertificate;binary" ldap_search "$DURATION" "userCertificate;binary"
  echo
done
echo "server RSS: $(ps -o rss= -p $SERVER | awk '{printf "%.0f MiB", $1/1024}')"
