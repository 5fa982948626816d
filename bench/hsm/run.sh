#!/usr/bin/env bash
# Signatures/s through a SoftHSM2 token (the PKCS#11 backend, and the module's bare C_Sign as the
# baseline) beside the soft backend and `openssl speed`, P-256 and RSA-2048, 1 and 2 threads, in
# one run. Honours CARGO_TARGET_DIR. Needs Debian's softhsm2 (scripts/test.sh installs it).
# Usage: bash bench/hsm/run.sh [SECONDS per measurement, default 5]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-5}"
module=/usr/lib/softhsm/libsofthsm2.so
[ -f "$module" ] || { echo "needs SoftHSM2: apt-get install -y softhsm2" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" >"$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
echo "bench-pin-1234" >"$work/pin"
softhsm2-util --init-token --free --label bench --so-pin bench-so-5678 --pin bench-pin-1234 >/dev/null

echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), memory: $(free -g | awk '/Mem:/{print $2}') GiB"
echo "openssl: $(openssl version); softhsm2: $(softhsm2-util --version); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "## openssl speed, signatures/s (one process, then -multi 2)"
openssl speed -seconds "$secs" ecdsap256 2>/dev/null | grep -E '^ *256 bits ecdsa'
openssl speed -seconds "$secs" rsa2048 2>/dev/null | grep -E '^rsa 2048'
openssl speed -multi 2 -seconds "$secs" ecdsap256 2>/dev/null | grep -E 'ecdsa.*256' | tail -1
openssl speed -multi 2 -seconds "$secs" rsa2048 2>/dev/null | grep -E '^rsa' | tail -1
echo
echo "## hsm-sim (cargo run --release -p hsm-sim --example pkcs11_sign_rate)"
cargo build -q --release -p hsm-sim --example pkcs11_sign_rate
target="${CARGO_TARGET_DIR:-target}"
"$target/release/examples/pkcs11_sign_rate" "$module" bench "$work/pin" "$secs"
