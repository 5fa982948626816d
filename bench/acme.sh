#!/usr/bin/env bash
# ACME orders finalized per second (issue 17): a fresh CA in a temporary directory, `pki serve
# --only acme` on a free loopback port with authorizations valid from the start for its enterprise
# domain, ACCOUNTS accounts made with External Account Binding, each sending ORDERS orders one
# after the other (newOrder, finalize with a fresh P-256 CSR, certificate download; every request a
# JWS with a fresh nonce) — client and server on this machine (crates/pki-tests/src/bin/acme-bench.rs).
#
# Usage: bash bench/acme.sh [ACCOUNTS [ORDERS]]   (defaults 8 and 250; the release build unless
#        PROFILE=dev; honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS=${1:-8}
ORDERS=${2:-250}
PROFILE=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-target}
if [ "$PROFILE" = release ]; then dir=release; else dir=debug; fi
cargo build -q --profile "$PROFILE" --bin pki
cargo build -q --profile "$PROFILE" -p pki-tests --bin acme-bench
pki=$target/$dir/pki
work=$(mktemp -d "${TMPDIR:-/tmp}/pki-bench-acme.XXXXXX")
server=""
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  [ -z "$server" ] || wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'bench passphrase\n' >"$work/passphrase"
cat >"$work/pki.toml" <<TOML
[server]
listen = "127.0.0.1:$port"

[ca]
public_base_url = "http://127.0.0.1:$port"

[hsm]
passphrase_file = "$work/passphrase"

[validation]
enterprise_domains = ["example.com"]

[acme]
enterprise_preauthorized = true
orders_per_minute = 100000
TOML
export PKI_CONFIG=$work/pki.toml PKI_DATA=$work/data
"$pki" init >/dev/null
for i in $(seq "$ACCOUNTS"); do
  out=$("$pki" acme eab create --name "bench $i" 2>/dev/null)
  kid=$(printf '%s\n' "$out" | sed -n 's/^key id: *//p')
  key=$(printf '%s\n' "$out" | sed -n 's/^hmac key: *//p')
  printf '%s %s\n' "$kid" "$key" >>"$work/eab"
done
"$pki" serve --only acme >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), profile: $PROFILE"
"$target/$dir/acme-bench" "http://127.0.0.1:$port" "$work/eab" "$ORDERS"
