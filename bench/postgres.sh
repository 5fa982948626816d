#!/usr/bin/env bash
# PostgreSQL beside sled (issue 15), both engines in the same run, client and servers on this
# machine:
#   1. the load: COUNT certificates issued into a sled data directory (`pki cerdb
#      load-test-data`, signing included), then that directory loaded into an empty PostgreSQL
#      database with `pki db copy` (batched inserts of 2,000, verified afterwards), beside the
#      same copy into another sled directory;
#   2. directory exists and fetch (wrk, random known addresses) on the sled server, on one
#      PostgreSQL replica (`pki serve --only directory`), and on two replicas at once (two wrk,
#      half the connections each);
#   3. OCSP (from the cache, and with a nonce) and TSA tokens on a sled and a PostgreSQL node;
#   4. exists on a PostgreSQL replica while another process loads BULK certificates into the
#      same database.
#
# Usage: bash bench/postgres.sh [COUNT]              (default 1000000)
# Env:   DURATION     seconds per wrk run (default 15)     CONNECTIONS (default 64)
#        BULK         certificates of the load in step 4 (default 100000)
#        BENCH_DIR    work directory (default /tmp/pki-bench-pg-COUNT); the sled source is kept
#                     and reused when loaded
#        PKI_BIN      the pki binary (default: a release build, in CARGO_TARGET_DIR)
#        SHARED_BUFFERS PostgreSQL's shared_buffers (default 3GB: the database of 1,000,000
#                     certificates is 2.6 GB, and the sled side has a cache of 6 GiB)
# A private PostgreSQL cluster is started by scripts/with-postgres.sh (loopback only) and
# stopped at the end. The numbers mean something only on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COUNT=${1:-1000000}
DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
BULK=${BULK:-100000}
DIR=${BENCH_DIR:-/tmp/pki-bench-pg-$COUNT}
BASE_PORT=${BASE_PORT:-18700}

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
if [ -n "${PKI_BIN:-}" ]; then
  PKI="$PKI_BIN"
else
  cargo build --release --bin pki
  PKI="${CARGO_TARGET_DIR:-$PWD/target}/release/pki"
fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
# Set before with-postgres.sh, which chains its own stop of the cluster after it.
trap cleanup EXIT
export PKI_TEST_PG_SETTINGS="-c shared_buffers=${SHARED_BUFFERS:-3GB}"
# shellcheck source=scripts/with-postgres.sh
source scripts/with-postgres.sh
: "${PKI_TEST_DATABASE_URL:?scripts/with-postgres.sh did not start PostgreSQL}"

mkdir -p "$DIR"
PASS="$DIR/passphrase"
[ -f "$PASS" ] || { head -c 24 /dev/urandom | base64 >"$PASS"; chmod 600 "$PASS"; }

# config FILE PORT [DATABASE_URL]
config() {
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\ntsa_anonymous_rate = 1e12\ntsa_anonymous_burst = 1e12\n' "$2"
    printf '[ca]\npublic_base_url = "http://127.0.0.1:%s"\n' "$2"
    printf '[database]\ncache_mib = 6144\n'
    [ -n "${3:-}" ] && printf 'url = "%s"\n' "$3"
    printf '[hsm]\npassphrase_file = "%s"\n' "$PASS"
    printf '[validation]\nenterprise_domains = ["loadtest.example"]\n'
  } >"$1"
}
create_db() {
  local name="bench_$(date +%s%N)"
  psql "$PKI_TEST_DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $name" >&2
  echo "${PKI_TEST_DATABASE_URL%/*}/$name"
}
# serve CONFIG DATA PORT ONLY LOG: starts a server, waits for /healthz; its pid in $SERVED
serve() {
  "$PKI" --config "$1" --data "$2" serve --only "$4" --listen "127.0.0.1:$3" >"$5" 2>&1 &
  SERVED=$!
  PIDS+=("$SERVED")
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$3/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$SERVED" 2>/dev/null || { echo "pki serve exited: $(tail -3 "$5")" >&2; exit 1; }
    sleep 0.1
  done
  echo "pki serve on $3 did not answer" >&2
  exit 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# lookups OP PORT [CONNECTIONS]: one wrk run; its summary lines
lookups() {
  DIR_COUNT=$COUNT DIR_KEY=$KEY DIR_OP=$1 \
    wrk -t1 -c"${3:-$CONNECTIONS}" -d"${DURATION}s" --latency -s bench/directory/lookup.lua "http://127.0.0.1:$2" |
    grep -E "RESULT|Requests/sec|^ +(50|99)%"
}

echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), memory: $(free -g | awk '/Mem:/{print $2}') GiB"
echo "PostgreSQL: $(psql "$PKI_TEST_DATABASE_URL" -Atc 'SHOW server_version'), shared_buffers $(psql "$PKI_TEST_DATABASE_URL" -Atc 'SHOW shared_buffers'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "load average before the run: $(cut -d" " -f1-3 /proc/loadavg)"
echo

SLED_CFG="$DIR/sled.toml"
config "$SLED_CFG" "$BASE_PORT"
spki() { "$PKI" --config "$SLED_CFG" --data "$DIR/data" "$@"; }
TIMEFORMAT="wall %R s (user %U s + sys %S s)"
if [ ! -f "$DIR/loaded" ]; then
  rm -rf "$DIR/data"
  echo "## 1a. sled: pki cerdb load-test-data --count $COUNT --batch 5000 (issuance, signing included)"
  spki init >/dev/null
  time spki cerdb load-test-data --count "$COUNT" --batch 5000 2>/dev/null
  spki apikey create --name bench --rate 1000000000 >"$DIR/apikey"
  touch "$DIR/loaded"
  echo
fi
KEY=$(cat "$DIR/apikey")

echo "## 1b. load into PostgreSQL: pki db copy --from sled --to postgres (batches of 2,000, then verified)"
URL=$(create_db)
PG_CFG="$DIR/pg.toml"
config "$PG_CFG" "$((BASE_PORT + 1))" "$URL"
start=$(date +%s.%N)
spki db copy --from "$DIR/data" --to "$URL" --sample 1000 >"$DIR/copy-pg.txt" 2>/dev/null
end=$(date +%s.%N)
copied=$(sed -n 's/^copied .* in \([0-9.]*\) s$/\1/p' "$DIR/copy-pg.txt")
echo "copy (without the verification): $copied s, $(awk "BEGIN{printf \"%.0f\", $COUNT / $copied}") certificates/s; with the verification: $(awk "BEGIN{printf \"%.1f\", $end - $start}") s"
grep "^verified" "$DIR/copy-pg.txt" | cut -c1-160
echo "database size: $(psql "$URL" -Atc 'SELECT pg_size_pretty(pg_database_size(current_database()))')"
echo
echo "## 1c. the same copy into a sled directory"
rm -rf "$DIR/copy"
start=$(date +%s.%N)
spki db copy --from "$DIR/data" --to "$DIR/copy" --sample 1000 >"$DIR/copy-sled.txt" 2>/dev/null
end=$(date +%s.%N)
copied=$(sed -n 's/^copied .* in \([0-9.]*\) s$/\1/p' "$DIR/copy-sled.txt")
echo "copy (without the verification): $copied s, $(awk "BEGIN{printf \"%.0f\", $COUNT / $copied}") certificates/s; with the verification: $(awk "BEGIN{printf \"%.1f\", $end - $start}") s"
rm -rf "$DIR/copy"
echo

echo "## 2. directory lookups, wrk -t1 -c$CONNECTIONS -d${DURATION}s, random of $COUNT known addresses"
serve "$SLED_CFG" "$DIR/data" "$BASE_PORT" directory "$DIR/sled-serve.log"
S=$SERVED
for _ in $(seq 3000); do grep -q "page cache warmed" "$DIR/sled-serve.log" && break; sleep 0.1; done
for op in exists fetch; do
  echo "### sled, $op"
  lookups "$op" "$BASE_PORT"
done
stop "$S"
P1=$((BASE_PORT + 1)) P2=$((BASE_PORT + 2))
PG_CFG2="$DIR/pg2.toml"
config "$PG_CFG2" "$P2" "$URL"
mkdir -p "$DIR/node1" "$DIR/node2"
serve "$PG_CFG" "$DIR/node1" "$P1" directory "$DIR/pg1-serve.log"
R1=$SERVED
for op in exists fetch; do
  echo "### PostgreSQL, one replica, $op"
  lookups "$op" "$P1"
done
serve "$PG_CFG2" "$DIR/node2" "$P2" directory "$DIR/pg2-serve.log"
R2=$SERVED
for op in exists fetch; do
  echo "### PostgreSQL, two replicas, $op (two wrk of $((CONNECTIONS / 2)) connections, one per replica)"
  lookups "$op" "$P1" $((CONNECTIONS / 2)) >"$DIR/r1.txt" &
  w1=$!
  lookups "$op" "$P2" $((CONNECTIONS / 2)) >"$DIR/r2.txt"
  wait $w1
  sed 's/^/replica 1: /' "$DIR/r1.txt"
  sed 's/^/replica 2: /' "$DIR/r2.txt"
  echo "both: $(cat "$DIR/r1.txt" "$DIR/r2.txt" | awk '/Requests\/sec/{s += $2} END{printf "%.0f", s}') requests/s"
done
stop "$R2"
echo "### the ceiling: pgbench running exists' query (the address's certificates; the API key's record is kept by the replica for a second), prepared, 16 clients, no HTTP"
PGBENCH=$(ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
{
  echo "\\set i random(0, $((COUNT - 1)))"
  echo "SELECT serial, meta FROM certs WHERE email_key = 'load-' || :i || '@loadtest.example' AND kind = 2 ORDER BY not_before DESC, serial DESC;"
} >"$DIR/exists.pgbench"
"$PGBENCH" -n -M prepared -c 16 -j 2 -T "$DURATION" -f "$DIR/exists.pgbench" "$URL" 2>&1 | grep -E "^tps|latency average"
echo

echo "## 3. OCSP and TSA, wrk -t1 -c$CONNECTIONS -d${DURATION}s"
spki ca-cert issuing >"$DIR/issuing.pem"
spki list 2>/dev/null | awk 'NR > 1 && NR <= 20001 {s = $1; if (length(s) % 2) s = "0" s; if (substr(s, 1, 1) ~ /[89A-F]/) s = "00" s; print tolower(s)}' >"$DIR/serials.txt"
first=$(head -1 "$DIR/serials.txt")
openssl ocsp -issuer "$DIR/issuing.pem" -serial "0x$first" -no_nonce -reqout "$DIR/one.der" >/dev/null 2>&1
mapfile -t hashes < <(openssl asn1parse -inform DER -in "$DIR/one.der" | awk -F'HEX DUMP]:' '/OCTET STRING/{print $2}')
export OCSP_SERIALS=$DIR/serials.txt OCSP_NAME_HASH=${hashes[0]} OCSP_KEY_HASH=${hashes[1]}
head -c 1000 /dev/urandom >"$DIR/doc.bin"
openssl ts -query -data "$DIR/doc.bin" -sha256 -cert -out "$DIR/query.tsq" 2>/dev/null
export TSA_QUERY=$DIR/query.tsq
stop "$R1"
for side in sled PostgreSQL; do
  if [ "$side" = sled ]; then serve "$SLED_CFG" "$DIR/data" "$BASE_PORT" ocsp,tsa "$DIR/sled-ot.log"; port=$BASE_PORT
  else serve "$PG_CFG" "$DIR/node1" "$P1" ocsp,tsa "$DIR/pg-ot.log"; port=$P1; fi
  N=$SERVED
  for nonce in 0 1; do
    echo "### $side, OCSP $([ $nonce = 1 ] && echo 'with a nonce (signed each)' || echo 'without a nonce (cached)')"
    OCSP_NONCE=$nonce wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/ocsp/ocsp.lua "http://127.0.0.1:$port" |
      grep -E "Requests/sec|^ +(50|99)%|Non-2xx"
  done
  echo "### $side, TSA tokens"
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/tsa/tsa.lua "http://127.0.0.1:$port" |
    grep -E "Requests/sec|^ +(50|99)%|Non-2xx"
  stop "$N"
done
echo

echo "## 4. exists on a PostgreSQL replica while another process loads $BULK certificates into the same database"
serve "$PG_CFG" "$DIR/node1" "$P1" directory "$DIR/pg1-serve.log"
R1=$SERVED
echo "### alone"
lookups exists "$P1"
"$PKI" --config "$PG_CFG2" --data "$DIR/node2" cerdb load-test-data --count "$BULK" --start "$COUNT" --batch 5000 \
  >"$DIR/bulk.log" 2>&1 &
LOADER=$!
PIDS+=("$LOADER")
sleep 2
echo "### during the load"
lookups exists "$P1"
start=$(date +%s.%N)
wait "$LOADER" || { echo "the load failed: $(tail -3 "$DIR/bulk.log")" >&2; exit 1; }
echo "the load ended $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $start}") s after the wrk run: $(tail -1 "$DIR/bulk.log" | tr '\r' '\n' | tail -1)"
stop "$R1"
psql "$PKI_TEST_DATABASE_URL" -q -c "DROP DATABASE IF EXISTS ${URL##*/} WITH (FORCE)" >/dev/null 2>&1 || true
