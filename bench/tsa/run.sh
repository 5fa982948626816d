#!/usr/bin/env bash
# Timestamp authority throughput (issue 5), in one run on this machine:
#   * tokens/s of `pki serve --only tsa` under wrk posting one fixed query (`openssl ts -query
#     -sha256 -cert`); every token gets its own serial and its record is on disk before it is
#     returned (the serial high-water mark and the token record are flushed);
#   * the raw signing rate of the TSA key type (`openssl speed ecdsap256`; the TSA key is P-256),
#     measured right before and right after each wrk round: the virtual machines this runs on
#     change speed from minute to minute, so each round's ratio compares like with like, and the
#     target is judged on the median round;
#   * `openssl ts -reply` making tokens one process per token;
#   * the in-process cost of a token (crates/tsa/examples/issue_rate.rs) and the server's CPU time
#     per token under wrk, to tell the TSA's own work from HTTP and the kernel.
#
# Usage: bash bench/tsa/run.sh
# Environment (all optional):
#   BENCH_ROUNDS=5       rounds of (openssl speed, wrk, openssl speed)
#   BENCH_SECONDS=10     duration of each wrk run
#   BENCH_SPEED_SECONDS=3  duration of each `openssl speed` run
#   BENCH_THREADS=2      wrk threads        BENCH_CONNECTIONS=64  wrk connections
#   BENCH_OPENSSL_TOKENS=200   tokens made by `openssl ts -reply`, one process each
#   BENCH_PORT=18490     loopback port of `pki serve`
#   BENCH_DIR=DIR        work directory, kept (default: a temporary one, removed at the end)
# Loopback only. Exits non-zero when any setup step fails. The numbers mean something only on an
# otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LUA="$ROOT/bench/tsa/tsa.lua"
ROUNDS=${BENCH_ROUNDS:-5}
SECS=${BENCH_SECONDS:-10}
SPEED_SECS=${BENCH_SPEED_SECONDS:-3}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-64}
OTOKENS=${BENCH_OPENSSL_TOKENS:-200}
PORT=${BENCH_PORT:-18490}
if [[ -n "${BENCH_DIR:-}" ]]; then
    WORK=$BENCH_DIR
    rm -rf "$WORK/data"
    mkdir -p "$WORK"
    KEEP=1
else
    WORK=$(mktemp -d /tmp/pki-bench-tsa.XXXXXX)
    KEEP=0
fi
WORK=$(cd "$WORK" && pwd)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    [[ "$KEEP" == 0 ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

fail() {
    echo "SETUP FAILURE: $*" >&2
    exit 1
}

# wrk's summary line (see tsa.lua) -> "requests/s requests p50_ms p99_ms errors bytes/response"
wrk_summary() {
    local line
    line=$(grep '^WRK_RESULT' "$1") || fail "no WRK_RESULT line in $1: $(tail -3 "$1")"
    echo "$line" | awk '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        errors = v["connect_err"] + v["read_err"] + v["write_err"] + v["status_err"] + v["timeout"]
        printf "%.0f %d %.2f %.2f %d %.0f\n", v["requests"] / (v["duration_us"] / 1e6), v["requests"],
            v["p50_us"] / 1000, v["p99_us"] / 1000, errors, (v["requests"] > 0 ? v["bytes"] / v["requests"] : 0)
    }'
}

for tool in openssl curl awk; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt-get)..." >&2
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 || fail "cannot install wrk"
fi

echo "building (cargo build --release)..." >&2
cargo build -q --release --bin pki || fail "cargo build --release --bin pki"
cargo build -q --release -p tsa --example issue_rate || fail "cargo build of the tsa example"
PKI="${CARGO_TARGET_DIR:-$ROOT/target}/release/pki"
DATA=$WORK/data
# No ./pki.toml may change the settings (the TSA key is P-256 by default); the anonymous /tsa
# quota per client address is lifted: wrk is one address, and the server's throughput is measured
# (the quota check itself stays in the path).
printf '[server]\ntsa_anonymous_rate = 1e12\ntsa_anonymous_burst = 1e12\n' >"$WORK/empty.toml"
export PKI_HSM_PASSPHRASE=

echo "document to timestamp" >"$WORK/doc.txt"
openssl ts -query -data "$WORK/doc.txt" -sha256 -cert -out "$WORK/query.tsq" 2>/dev/null || fail "openssl ts -query"

echo "# Timestamp authority benchmark (issue 5)"
echo
echo "## Machine"
echo
echo "- cpu: $(lscpu | awk -F: '/Model name/{gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
echo "- disk holding the data directory: $(df --output=source,fstype "$WORK" | tail -1 | tr -s ' ')"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (must be near 0 for final numbers)"
echo "- $(openssl version), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(rustc --version)"
echo "- query: \`openssl ts -query -sha256 -cert\` (certReq: the TSA certificate is in every token)"
echo

# One-process `openssl speed` sign/s of the TSA key type.
speed() {
    local v
    v=$(openssl speed -seconds "$SPEED_SECS" ecdsap256 2>/dev/null | awk '/256 bits ecdsa/{print $(NF-1)}')
    [[ -n "$v" ]] || fail "openssl speed"
    echo "$v"
}
SPEED_MULTI=$(openssl speed -multi 2 -seconds "$SPEED_SECS" ecdsap256 2>/dev/null |
    awk '/256 bits ecdsa/{print $(NF-1)}' | tail -1)

echo "## In-process cost of a token (no HTTP; a throw-away TSA in \$TMPDIR)"
echo
"${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/issue_rate" 3 16 || fail "issue_rate"
echo

# ---- pki serve --only tsa --------------------------------------------------------------------
"$PKI" --data "$DATA" --config "$WORK/empty.toml" serve --listen "127.0.0.1:$PORT" --only tsa \
    >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "pki serve exited: $(tail -5 "$WORK/serve.log")"
    sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || fail "pki serve does not answer /healthz"
"$PKI" --data "$DATA" --config "$WORK/empty.toml" ca-cert root >"$WORK/root.pem" || fail "pki ca-cert root"

stamp() { # $1 output file; prints the token's serial (decimal)
    curl -sf --data-binary @"$WORK/query.tsq" -H 'Content-Type: application/timestamp-query' \
        "http://127.0.0.1:$PORT/tsa" -o "$1" || fail "POST /tsa"
    local text
    text=$(openssl ts -reply -in "$1" -text 2>/dev/null) || fail "openssl cannot read the reply"
    grep -q "Status: Granted" <<<"$text" || fail "not granted: $text"
    openssl ts -verify -in "$1" -queryfile "$WORK/query.tsq" -CAfile "$WORK/root.pem" >/dev/null 2>&1 ||
        fail "openssl ts -verify rejects the token"
    local hex
    hex=$(awk '/^Serial number:/{print $3}' <<<"$text")
    printf '%d\n' "$hex"
}
SERIAL_BEFORE=$(stamp "$WORK/before.tsr")

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
run_wrk() { # $1 label, then wrk settings
    local label=$1 before after
    shift
    before=$(ticks "$SERVER_PID")
    TSA_QUERY=$WORK/query.tsq wrk "$@" "-d${SECS}s" -s "$LUA" "http://127.0.0.1:$PORT" \
        >"$WORK/wrk-$label.txt" 2>&1 || fail "wrk ($label): $(tail -3 "$WORK/wrk-$label.txt")"
    after=$(ticks "$SERVER_PID")
    echo $(((after - before) * 1000000 / HZ)) >"$WORK/cpu-$label.txt" # server CPU µs
}
for r in $(seq "$ROUNDS"); do
    speed >"$WORK/speed-$r-before.txt"
    run_wrk "round$r" "-t$THREADS" "-c$CONNS"
    speed >"$WORK/speed-$r-after.txt"
done
run_wrk one -t1 -c1

# Every request got a serial: the next token's serial tells how many tokens were issued, and the
# verifier (through the running server) finds the last one in the record.
SERIAL_AFTER=$(stamp "$WORK/after.tsr")
ISSUED=$((SERIAL_AFTER - SERIAL_BEFORE - 1))
"$PKI" --data "$DATA" --config "$WORK/empty.toml" ts verify --token "$WORK/after.tsr" --data "$WORK/doc.txt" \
    >"$WORK/verify.txt" 2>&1 || fail "pki ts verify of the last token: $(cat "$WORK/verify.txt")"
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

# ---- openssl ts -reply, one process per token --------------------------------------------------
O=$WORK/openssl-tsa
mkdir -p "$O"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$O/tsa.key" -out "$O/tsa.pem" \
    -subj "/CN=OpenSSL benchmark TSA" -days 2 -addext "extendedKeyUsage=critical,timeStamping" \
    -addext "keyUsage=critical,digitalSignature" 2>/dev/null || fail "openssl req (TSA certificate)"
cat >"$O/tsa.cnf" <<EOF
[ tsa ]
default_tsa = bench
[ bench ]
dir = $O
serial = \$dir/serial
crypto_device = builtin
signer_cert = \$dir/tsa.pem
signer_key = \$dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.32473.1
digests = sha256, sha384, sha512
accuracy = secs:0, millisecs:100
ordering = no
tsa_name = yes
ess_cert_id_alg = sha256
EOF
echo 01 >"$O/serial"
openssl ts -reply -config "$O/tsa.cnf" -queryfile "$WORK/query.tsq" -out "$O/check.tsr" 2>/dev/null ||
    fail "openssl ts -reply"
openssl ts -verify -in "$O/check.tsr" -queryfile "$WORK/query.tsq" -CAfile "$O/tsa.pem" >/dev/null 2>&1 ||
    fail "openssl ts -verify of openssl's own token"
start=$(date +%s.%N)
for i in $(seq "$OTOKENS"); do
    openssl ts -reply -config "$O/tsa.cnf" -queryfile "$WORK/query.tsq" -out "$O/r.tsr" 2>/dev/null ||
        fail "openssl ts -reply ($i)"
done
end=$(date +%s.%N)
OPENSSL_RATE=$(awk "BEGIN{printf \"%.0f\", $OTOKENS / ($end - $start)}")

# ---- report ----------------------------------------------------------------------------------
echo "## Tokens per second"
echo
echo "| what | settings | tokens/s | tokens | p50 ms | p99 ms | errors | bytes/reply | server CPU µs/token |"
echo "|---|---|---|---|---|---|---|---|---|"
row() { # label, what, settings
    local s
    s=$(wrk_summary "$WORK/wrk-$1.txt")
    read -r rate n p50 p99 errors bytes <<<"$s"
    local cpu="-"
    if [[ $n -gt 0 ]]; then cpu=$(($(cat "$WORK/cpu-$1.txt") / n)); fi
    echo "| $2 | $3 | $rate | $n | $p50 | $p99 | $errors | $bytes | $cpu |"
    eval "RATE_$1=$rate; N_$1=$n"
}
for r in $(seq "$ROUNDS"); do
    row "round$r" "pki serve --only tsa (wrk), round $r" "-t$THREADS -c$CONNS -d${SECS}s"
done
row one "pki serve --only tsa (wrk)" "-t1 -c1 -d${SECS}s"
echo "| \`openssl ts -reply\`, one process per token | $OTOKENS tokens in a loop | $OPENSSL_RATE | $OTOKENS | | | | | |"
echo
echo "Serials: the token before the runs had serial $SERIAL_BEFORE, the one after $SERIAL_AFTER, so the"
COUNTED=$N_one
for r in $(seq "$ROUNDS"); do COUNTED=$((COUNTED + $(eval "echo \$N_round$r"))); done
echo "server issued $ISSUED tokens during the runs; wrk counted $COUNTED replies (the rest were"
echo "in flight when wrk stopped). \`pki ts verify\` found the last token in the record."
echo

echo "## Against the raw signing rate, round by round"
echo
echo "\`openssl speed -seconds $SPEED_SECS ecdsap256\` (one process) right before and right after each wrk round;"
echo "the round's ratio is its tokens/s over the mean of the two. \`-multi 2\` at the start: ${SPEED_MULTI:-?} sign/s."
echo
echo "| round | sign/s before | sign/s after | tokens/s | ratio |"
echo "|---|---|---|---|---|"
RATIOS=""
for r in $(seq "$ROUNDS"); do
    b=$(cat "$WORK/speed-$r-before.txt")
    a=$(cat "$WORK/speed-$r-after.txt")
    t=$(eval "echo \$RATE_round$r")
    ratio=$(awk "BEGIN{printf \"%.1f\", 100 * $t / (($b + $a) / 2)}")
    RATIOS="$RATIOS $ratio"
    echo "| $r | $b | $a | $t | $ratio % |"
done
MEDIAN=$(tr ' ' '\n' <<<"$RATIOS" | grep . | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
LOWEST=$(tr ' ' '\n' <<<"$RATIOS" | grep . | sort -n | head -1)
MEDIAN_RATE=$(for r in $(seq "$ROUNDS"); do eval "echo \$RATE_round$r"; done | sort -n |
    awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
LOWEST_RATE=$(for r in $(seq "$ROUNDS"); do eval "echo \$RATE_round$r"; done | sort -n | head -1)
echo

verdict() { if awk "BEGIN{exit !($1)}"; then echo "met"; else echo "NOT met"; fi; }
echo "## Targets"
echo
echo "| target | measured | |"
echo "|---|---|---|"
echo "| ≥ 70% of \`openssl speed\` ecdsap256 sign/s, median round | median $MEDIAN %, lowest $LOWEST % | $(verdict "$MEDIAN >= 70") |"
echo "| ahead of sigstore timestamp-authority's 6,481 requests/s (ECDSA P-256, a laptop) | median $MEDIAN_RATE, lowest $LOWEST_RATE tokens/s | $(verdict "$LOWEST_RATE > 6481") |"
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
