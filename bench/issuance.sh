#!/usr/bin/env bash
# Issuance throughput beside OpenSSL's raw signing rate, on this machine, in one run.
# Usage: bash bench/issuance.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), memory: $(free -g | awk '/Mem:/{print $2}') GiB"
echo "openssl: $(openssl version)"
echo
echo "## openssl speed (one process, 5 s each)"
openssl speed -seconds 5 ecdsap256 2>/dev/null | grep -E '^ *256 bits ecdsa'
openssl speed -seconds 5 rsa2048 2>/dev/null | grep -E '^rsa 2048'
echo
echo "## openssl speed -multi 2"
openssl speed -multi 2 -seconds 5 ecdsap256 2>/dev/null | grep -E '^ *256 bits ecdsa|ecdsa.*256' | tail -1
openssl speed -multi 2 -seconds 5 rsa2048 2>/dev/null | grep -E '^rsa' | tail -1
echo
echo "## pki issuance (cargo bench -p ca-core --bench issuance)"
cargo bench -q -p ca-core --bench issuance 2>/dev/null
