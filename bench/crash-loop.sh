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
# Usage: bash bench/crash-loop.sh [--planted-loss] ROUNDS [SEED]
#   (the release build of pki; honours CARGO_TARGET_DIR)
#   --planted-loss: run a build whose sled engine acknowledges the first revocation after each
#   start without writing it (cerdb's `planted-loss` feature); the loop must exit 1 naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
planted=
if [ "${1:-}" = --planted-loss ]; then
  planted=1
  shift
fi
ROUNDS=${1:?usage: bash bench/crash-loop.sh [--planted-loss] ROUNDS [SEED]}
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/pki
if [ -n "$planted" ]; then
  cargo build -q --release --bin pki --features planted-loss
  cp "$bin" "$target/release/pki-planted-loss"
  bin=$target/release/pki-planted-loss
  echo "planted loss: $bin acknowledges the first revocation after each start without writing it"
fi
# The usual build last: $target/release/pki is never left as the planted one.
cargo build -q --release --bin pki
cargo build -q --release -p pki-tests --bin crash-loop
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc)"
PKI_TESTS_BIN=$bin exec "$target/release/crash-loop" "$ROUNDS" ${2:+"$2"}
