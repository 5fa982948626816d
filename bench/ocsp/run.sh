#!/usr/bin/env bash
# OCSP responder throughput (issue 4), in one run on this machine, with one client (wrk):
#   * this responder (`pki serve --only ocsp`), random serials among BENCH_CERTS certificates,
#     answered from its cache (no nonce) and with a fresh random nonce each (a signature each);
#   * OpenSSL's responder (`openssl ocsp -index ... -port ...`) on the same certificates and the
#     same requests, one process and `-multi 2`, with one wrk connection and with the same
#     settings as ours;
#   * `openssl speed ecdsap256`: the raw signing rate of the signer key type (P-256);
#   * the in-process cost of an answer (examples/respond_rate.rs) and the server's CPU time per
#     response under wrk, to tell the responder's own work from HTTP and the kernel.
#
# Usage: bash bench/ocsp/run.sh
# Environment (all optional):
#   BENCH_CERTS=100000   certificates issued into the data directory
#   BENCH_SECONDS=15     duration of each wrk run
#   BENCH_THREADS=2      wrk threads        BENCH_CONNECTIONS=64  wrk connections
#   BENCH_PORT=18480     loopback port of `pki serve` (OpenSSL's responder: BENCH_PORT+1)
#   BENCH_DIR=DIR        work directory, kept and reused (the certificates take a while to make);
#                        default: a fresh temporary directory, removed at the end
# Loopback only. OpenSSL's responder can only listen on every interface (`-port` takes a number),
# so it runs in a private network namespace (`unshare --net`) whose only interface is loopback.
# Exits non-zero when any setup step fails. The numbers mean something only on an otherwise idle
# machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF="$ROOT/bench/ocsp/run.sh"
LUA="$ROOT/bench/ocsp/ocsp.lua"

fail() {
    echo "SETUP FAILURE: $*" >&2
    exit 1
}

# wrk's summary line (see ocsp.lua) -> "requests/s requests p50_ms p99_ms errors"
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

# ---------------------------------------------------------------------------------------------
# The OpenSSL part, run by the main part inside `unshare --net`: `$SELF --openssl-in-netns`.
if [[ "${1:-}" == "--openssl-in-netns" ]]; then
    ip link set lo up
    W=$WORK_DIR
    OSSL_PID=""
    stop_openssl() { # the process started below and its -multi children, by id
        [[ -n "$OSSL_PID" ]] || return 0
        local children
        children=$(pgrep -P "$OSSL_PID" || true)
        kill "$OSSL_PID" $children 2>/dev/null || true
        for _ in $(seq 20); do
            kill -0 "$OSSL_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$OSSL_PID" $children 2>/dev/null || true
        wait "$OSSL_PID" 2>/dev/null || true
        OSSL_PID=""
    }
    trap stop_openssl EXIT
    run_openssl() { # $1 label, $2 multi (empty for one process), then wrk args
        local label=$1 multi=$2
        shift 2
        local args=(-index "$W/out/index.txt" -port "$OPORT" -rsigner "$W/ossl-signer.pem"
            -rkey "$W/ossl-signer.key" -CA "$W/out/issuing.pem" -ndays 1)
        [[ -n "$multi" ]] && args+=(-multi "$multi")
        openssl ocsp "${args[@]}" >"$W/openssl-ocsp.log" 2>&1 &
        OSSL_PID=$!
        # Ready once it listens (its ACCEPT line). Not by connecting: a connection closed without
        # a request makes OpenSSL 3.0's responder spin on the EOF forever (see ocsp.lua).
        for _ in $(seq 100); do
            grep -q "^ACCEPT" "$W/openssl-ocsp.log" && sleep 0.3 && break
            sleep 0.1
        done
        grep -q "^ACCEPT" "$W/openssl-ocsp.log" ||
            { echo "openssl ocsp did not start: $(cat "$W/openssl-ocsp.log")" >&2; exit 1; }
        OCSP_PATH=/ wrk "$@" -d"${SECS}s" -s "$LUA" "http://127.0.0.1:$OPORT/" >"$W/wrk-$label.txt" 2>&1 || true
        stop_openssl
    }
    run_openssl openssl-1proc-1conn "" -t1 -c1
    run_openssl openssl-1proc-same "" "-t$THREADS" "-c$CONNS"
    run_openssl openssl-multi2-same 2 "-t$THREADS" "-c$CONNS"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
CERTS=${BENCH_CERTS:-100000}
SECS=${BENCH_SECONDS:-15}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-64}
PORT=${BENCH_PORT:-18480}
OPORT=$((PORT + 1))
if [[ -n "${BENCH_DIR:-}" ]]; then
    WORK=$BENCH_DIR
    mkdir -p "$WORK"
    KEEP=1
else
    WORK=$(mktemp -d /tmp/pki-bench-ocsp.XXXXXX)
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

for tool in openssl curl unshare ip awk; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt-get)..." >&2
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 || fail "cannot install wrk"
fi
unshare --net true 2>/dev/null || fail "cannot make a network namespace (unshare --net) for OpenSSL's responder"

echo "building (cargo build --release)..." >&2
cargo build -q --release --bin pki || fail "cargo build --release --bin pki"
cargo build -q --release -p ocsp-responder --example bench_data --example respond_rate --example warm_cache ||
    fail "cargo build of the ocsp-responder examples"
PKI="${CARGO_TARGET_DIR:-$ROOT/target}/release/pki"
EX="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"

# One data directory with CERTS certificates, issued through Ca::issue_many (batches of 500).
DATA=$WORK/data
if [[ -f "$WORK/out/serials.txt" && $(wc -l <"$WORK/out/serials.txt") -eq $CERTS && -d "$DATA/db" ]]; then
    echo "reusing the $CERTS certificates in $WORK" >&2
else
    rm -rf "$DATA" "$WORK/out"
    echo "issuing $CERTS certificates..." >&2
    "$EX/bench_data" "$DATA" "$WORK/out" "$CERTS" >&2 || fail "bench_data"
fi
[[ $(wc -l <"$WORK/out/serials.txt") -eq $CERTS ]] || fail "serials.txt does not list $CERTS serials"
: >"$WORK/empty.toml" # no ./pki.toml may change the settings
export PKI_HSM_PASSPHRASE=

# OpenSSL's signer: a P-256 key and certificate made here. Ours never leaves hsm-sim, so OpenSSL
# cannot sign with it; the key type (and so the cost of a signature) is the same.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/ossl-signer.key" \
    -out "$WORK/ossl-signer.pem" -subj "/CN=OpenSSL benchmark OCSP signer" -days 2 \
    -addext "extendedKeyUsage=critical,OCSPSigning" 2>/dev/null || fail "openssl req (signer)"

# The CertID issuer hashes (SHA-1), as OpenSSL computes them.
first=$(head -1 "$WORK/out/index.txt" | cut -f4)
openssl ocsp -issuer "$WORK/out/issuing.pem" -serial "0x$first" -no_nonce -reqout "$WORK/one.der" >/dev/null 2>&1 ||
    fail "openssl ocsp -reqout"
mapfile -t hashes < <(openssl asn1parse -inform DER -in "$WORK/one.der" | awk -F'HEX DUMP]:' '/OCTET STRING/{print $2}')
[[ ${#hashes[@]} -eq 2 ]] || fail "cannot read the CertID hashes"
export OCSP_SERIALS=$WORK/out/serials.txt OCSP_NAME_HASH=${hashes[0]} OCSP_KEY_HASH=${hashes[1]}

echo "# OCSP responder benchmark (issue 4)"
echo
echo "## Machine"
echo
echo "- cpu: $(lscpu | awk -F: '/Model name/{gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (must be near 0 for final numbers)"
echo "- $(openssl version), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(rustc --version)"
echo "- $CERTS certificates; wrk -t$THREADS -c$CONNS -d${SECS}s unless stated; loopback"
echo

echo "## Raw signing rate of the signer key type"
echo
SPEED1=$(openssl speed -seconds 5 ecdsap256 2>/dev/null | awk '/256 bits ecdsa/{print $(NF-1)}')
SPEED2=$(openssl speed -multi 2 -seconds 5 ecdsap256 2>/dev/null | awk '/256 bits ecdsa/{print $(NF-1)}' | tail -1)
[[ -n "$SPEED1" ]] || fail "openssl speed"
echo "| \`openssl speed -seconds 5 ecdsap256\` | sign/s |"
echo "|---|---|"
echo "| one process | $SPEED1 |"
echo "| \`-multi 2\` | ${SPEED2:-?} |"
echo

echo "## In-process cost of an answer (no HTTP), one thread"
echo
"$EX/respond_rate" "$DATA" "$WORK/out" 3 || fail "respond_rate"
echo

# ---- this responder --------------------------------------------------------------------------
"$PKI" --data "$DATA" --config "$WORK/empty.toml" serve --listen "127.0.0.1:$PORT" --only ocsp \
    >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "pki serve exited: $(tail -5 "$WORK/serve.log")"
    sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || fail "pki serve does not answer /healthz"
"$PKI" --data "$DATA" --config "$WORK/empty.toml" ca-cert root >"$WORK/root.pem" || fail "pki ca-cert root"

# The Lua-built requests, checked with OpenSSL: status good, nonce echoed, signature verified.
check_request() { # $1 nonce (0/1)
    rm -f "$WORK/req.der"
    OCSP_DUMP=$WORK/req.der OCSP_NONCE=$1 wrk -t1 -c1 -d1s -s "$LUA" "http://127.0.0.1:$PORT" >/dev/null 2>&1
    [[ -s "$WORK/req.der" ]] || fail "ocsp.lua wrote no request"
    curl -sf --data-binary @"$WORK/req.der" -H 'Content-Type: application/ocsp-request' \
        "http://127.0.0.1:$PORT/ocsp" -o "$WORK/resp.der" || fail "POST /ocsp"
    local text
    text=$(openssl ocsp -reqin "$WORK/req.der" -respin "$WORK/resp.der" -CAfile "$WORK/root.pem" \
        -issuer "$WORK/out/issuing.pem" -resp_text 2>&1) || fail "openssl rejects the response: $text"
    grep -q "Response verify OK" <<<"$text" || fail "response not verified: $text"
    grep -q "Cert Status: good" <<<"$text" || fail "status is not good: $text"
    if [[ $1 == 1 ]]; then grep -q "OCSP Nonce" <<<"$text" || fail "nonce not echoed"; fi
}
check_request 0
check_request 1

# Every serial asked once, so that the cached run is served from the cache.
"$EX/warm_cache" "127.0.0.1:$PORT" "$WORK/out" 4 >&2 || fail "cache warm-up"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
run_ours() { # $1 label, $2 nonce
    local before after
    before=$(ticks "$SERVER_PID")
    OCSP_NONCE=$2 wrk "-t$THREADS" "-c$CONNS" "-d${SECS}s" -s "$LUA" "http://127.0.0.1:$PORT" \
        >"$WORK/wrk-$1.txt" 2>&1 || fail "wrk ($1): $(tail -3 "$WORK/wrk-$1.txt")"
    after=$(ticks "$SERVER_PID")
    echo $(((after - before) * 1000000 / HZ)) >"$WORK/cpu-$1.txt" # server CPU µs
}
run_ours ours-cached 0
run_ours ours-nonce 1
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

# ---- OpenSSL's responder, in a private network namespace -------------------------------------
WORK_DIR=$WORK OPORT=$OPORT SECS=$SECS THREADS=$THREADS CONNS=$CONNS \
    unshare --net bash "$SELF" --openssl-in-netns || fail "the OpenSSL responder runs"

# ---- report ----------------------------------------------------------------------------------
echo "## Responses per second (wrk, POST, random serials among $CERTS)"
echo
echo "| server | requests | wrk | responses/s | p50 ms | p99 ms | errors | bytes/response | server CPU µs/response |"
echo "|---|---|---|---|---|---|---|---|---|"
row() { # label, server, requests, wrk settings
    local s
    s=$(wrk_summary "$WORK/wrk-$1.txt")
    read -r rate n p50 p99 errors bytes <<<"$s"
    local cpu="-"
    if [[ -f "$WORK/cpu-$1.txt" && $n -gt 0 ]]; then cpu=$(($(cat "$WORK/cpu-$1.txt") / n)); fi
    echo "| $2 | $3 | $4 | $rate | $p50 | $p99 | $errors | $bytes | $cpu |"
    eval "RATE_${1//-/_}=$rate"
}
row ours-cached "pki serve (cached)" "no nonce" "-t$THREADS -c$CONNS"
row ours-nonce "pki serve (nonce: signs each)" "fresh nonce" "-t$THREADS -c$CONNS"
row openssl-1proc-1conn "openssl ocsp, one process" "no nonce" "-t1 -c1"
row openssl-1proc-same "openssl ocsp, one process" "no nonce" "-t$THREADS -c$CONNS"
row openssl-multi2-same "openssl ocsp -multi 2" "no nonce" "-t$THREADS -c$CONNS"
echo
echo "(bytes/response includes the HTTP headers; an error answer would be a few bytes. OpenSSL's"
echo "responder signs every response, so its nonce and no-nonce rates are the same.)"
echo

one_proc=$(printf '%s\n' "$RATE_openssl_1proc_1conn" "$RATE_openssl_1proc_same" | sort -n | tail -1)
ratio() { awk "BEGIN{printf \"%.1f×\", $1 / $2}"; }
verdict() { if awk "BEGIN{exit !($1)}"; then echo "met"; else echo "NOT met"; fi; }
echo "## Targets"
echo
echo "| target | measured | |"
echo "|---|---|---|"
echo "| cached ≥ 30,000 responses/s | $RATE_ours_cached | $(verdict "$RATE_ours_cached >= 30000") |"
echo "| cached ≥ 4× OpenSSL's responder as the issue runs it (\`openssl ocsp -index -port\`, one process; its better row: $one_proc) | $(ratio "$RATE_ours_cached" "$one_proc") | $(verdict "$RATE_ours_cached >= 4 * $one_proc") |"
echo "| the same against \`openssl ocsp -multi 2\` ($RATE_openssl_multi2_same) | $(ratio "$RATE_ours_cached" "$RATE_openssl_multi2_same") | $(verdict "$RATE_ours_cached >= 4 * $RATE_openssl_multi2_same") |"
echo "| nonce ≥ 70% of \`openssl speed\` ecdsap256 sign/s ($SPEED1 → $(awk "BEGIN{printf \"%.0f\", 0.7 * $SPEED1}")) | $RATE_ours_nonce ($(awk "BEGIN{printf \"%.0f%%\", 100 * $RATE_ours_nonce / $SPEED1}")) | $(verdict "$RATE_ours_nonce >= 0.7 * $SPEED1") |"
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
