#!/usr/bin/env bash
# Issuance in batches and OCSP with a nonce on the PKCS#11 backend (a SoftHSM2 token) beside the
# soft backend, in one run: for each backend a fresh data directory, `pki init`, `pki cerdb
# load-test-data --count N --batch 500` (the rate it prints: issuance in batches, signing in
# custody), then `pki serve --only ocsp` and wrk with bench/ocsp/ocsp.lua and a fresh nonce in every
# request (so every answer is a signature by the OCSP key in custody), after a pass that fills the
# response cache. Honours CARGO_TARGET_DIR
# (PKI_BIN: measure that binary). Needs Debian's softhsm2 and wrk.
# Usage: bash bench/hsm/services.sh [N certificates, default 20000] [SECONDS per wrk run, default 15]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20000}
SECS=${2:-15}
PORT=${PORT:-18490}
module=/usr/lib/softhsm/libsofthsm2.so
[ -f "$module" ] || { echo "needs SoftHSM2: apt-get install -y softhsm2" >&2; exit 1; }
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }
if [ -n "${PKI_BIN:-}" ]; then
  PKI=$PKI_BIN
else
  cargo build -q --release --bin pki
  PKI="${CARGO_TARGET_DIR:-$PWD/target}/release/pki"
fi

work=$(mktemp -d)
SERVER=
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" >"$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
echo "bench-pin-1234" >"$work/pin"
softhsm2-util --init-token --free --label bench --so-pin bench-so-5678 --pin bench-pin-1234 >/dev/null
export PKI_HSM_PASSPHRASE=

echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc); softhsm2: $(softhsm2-util --version); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "openssl speed ecdsap256 (one process, 3 s): $(openssl speed -seconds 3 ecdsap256 2>/dev/null | awk '/^ *256 bits ecdsa/{print $7}') sign/s"
for backend in soft pkcs11; do
  d=$work/$backend
  mkdir -p "$d"
  printf '[server]\nlisten = "127.0.0.1:%s"\n[ca]\npublic_base_url = "http://127.0.0.1:%s"\n' "$PORT" "$PORT" >"$d/pki.toml"
  if [ "$backend" = pkcs11 ]; then
    printf '[hsm]\nbackend = "pkcs11"\nmodule = "%s"\ntoken_label = "bench"\npin_file = "%s"\n' "$module" "$work/pin" >>"$d/pki.toml"
  fi
  pki() { "$PKI" --config "$d/pki.toml" --data "$d/data" "$@"; }
  echo
  echo "## $backend backend (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
  pki init >/dev/null
  echo "issuance in batches of 500: $(pki cerdb load-test-data --count "$N" --batch 500 2>&1 | tail -1)"
  pki list | awk 'NR > 1 && $2 == "encryption" {print $1}' >"$d/serials.txt"
  pki ca-cert issuing >"$d/issuing.pem"
  openssl ocsp -issuer "$d/issuing.pem" -serial "0x$(head -1 "$d/serials.txt")" -no_nonce -reqout "$d/one.der" >/dev/null 2>&1
  mapfile -t hashes < <(openssl asn1parse -inform DER -in "$d/one.der" | awk -F'HEX DUMP]:' '/OCTET STRING/{print $2}')
  "$PKI" --config "$d/pki.toml" --data "$d/data" serve --only ocsp >"$d/serve.log" 2>&1 &
  SERVER=$!
  until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.1; done
  # A pass that fills the response cache (every serial's first answer is signed), not reported.
  OCSP_SERIALS=$d/serials.txt OCSP_NAME_HASH=${hashes[0]} OCSP_KEY_HASH=${hashes[1]} OCSP_NONCE=0 \
    wrk -t2 -c64 -d"${SECS}s" -s bench/ocsp/ocsp.lua "http://127.0.0.1:$PORT" >/dev/null 2>&1
  for nonce in 0 1; do
    OCSP_SERIALS=$d/serials.txt OCSP_NAME_HASH=${hashes[0]} OCSP_KEY_HASH=${hashes[1]} OCSP_NONCE=$nonce \
      wrk -t2 -c64 -d"${SECS}s" --latency -s bench/ocsp/ocsp.lua "http://127.0.0.1:$PORT" >"$d/wrk-$nonce.txt" 2>&1
    label=$([ $nonce = 1 ] && echo "OCSP with nonce (a signature each)" || echo "OCSP without nonce (cached)")
    echo "$label: $(grep -E 'Requests/sec' "$d/wrk-$nonce.txt" | awk '{print $2}')/s, p99 $(grep -E '^ +99%' "$d/wrk-$nonce.txt" | awk '{print $2}'), $(grep -o 'WRK_RESULT.*' "$d/wrk-$nonce.txt" | grep -o 'errors=[0-9]*\|non_ok=[0-9]*' | tr '\n' ' ')"
  done
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
done
