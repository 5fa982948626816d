#!/usr/bin/env bash
# The soak (issue 19): a release `pki serve` under mixed traffic — issuance from CSRs and escrowed
# issuance through the admin socket, revocations, timestamps, OCSP, directory lookups — held at
# 80 % of the capacity measured first (30 s, closed loop, same clients) for MINUTES, with a 64 MiB
# database cache (full within the warm-up). Prints per minute the operations, errors, p50 and p99
# per endpoint and the server's RSS; exits non-zero on any error or when the RSS grows over the
# last half of the run (crates/pki-tests/src/soak.rs).
#
# Usage: bash bench/soak.sh MINUTES [CALIBRATE_SECS] [FRACTION]   (honours CARGO_TARGET_DIR;
# SOAK_CLASSES=ocsp,directory runs only those clients: issue, revoke, tsa, ocsp, directory)
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:?usage: bash bench/soak.sh MINUTES [CALIBRATE_SECS] [FRACTION]}
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release --bin pki
cargo build -q --release -p pki-tests --bin soak
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
PKI_TESTS_BIN=$target/release/pki exec "$target/release/soak" "$MINUTES" ${2:+"$2"} ${3:+"$3"}
