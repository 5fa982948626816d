#!/usr/bin/env bash
# The crash loop (issue 19): ROUNDS times, `pki serve` on one data directory under mixed load —
# issuance from CSRs and escrowed issuance through the admin socket, issuance from CSRs in the
# console (an officer's session), revocations, timestamps over HTTP, directory lookups — for a
# random 0.5–3 s, killed with SIGKILL, restarted and checked:
# every acknowledged certificate in `pki list` (no serial twice), every acknowledged revocation in
# `pki list`, the CRL and an `openssl ocsp` answer, every acknowledged token accepted by
# `pki ts verify`, and `pki audit verify`. Prints `rounds N, acknowledged A, lost L` and exits
# non-zero on any loss (crates/pki-tests/src/crash_loop.rs).
#
# Usage: bash bench/crash-loop.sh ROUNDS [SEED]    (the release build of pki; honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:?usage: bash bench/crash-loop.sh ROUNDS [SEED]}
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release --bin pki
cargo build -q --release -p pki-tests --bin crash-loop
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc)"
PKI_TESTS_BIN=$target/release/pki exec "$target/release/crash-loop" "$ROUNDS" ${2:+"$2"}
