#!/usr/bin/env bash
# Console page times with 100,000 certificates (issue 6), steady and with an issuance between
# requests. Usage: bash bench/console/run.sh   (BENCH_CERTS, BENCH_ROUNDS: see main.rs)
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -q -p admin-web --bench console
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
