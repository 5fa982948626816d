#!/usr/bin/env bash
# Same-run A/B of two pki binaries on the storage paths (issue 14): the load of COUNT certificates
# with `pki cerdb load-test-data --batch 5000`, directory exists and fetch over those, and lookups
# while the same server issues in batches of 5,000 (bench/directory/during-load.sh). A and B take
# turns, ROUNDS times, each on a fresh data directory, so that whatever else the machine does
# falls on both.
#
# Usage: PKI_A=/path/to/old/pki PKI_B=/path/to/new/pki bash bench/storage-ab.sh [COUNT] [ROUNDS]
#        (defaults: 100000 certificates, 2 rounds; DURATION seconds per wrk run, default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-100000}
ROUNDS=${2:-2}
: "${PKI_A:?set PKI_A to the binary before the change}" "${PKI_B:?set PKI_B to the binary after it}"
export DURATION=${DURATION:-15}

echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), memory: $(free -g | awk '/Mem:/{print $2}') GiB"
echo "A: $PKI_A"
echo "B: $PKI_B"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    bin=PKI_$side
    dir=/tmp/pki-bench-ab-$side-$COUNT
    rm -rf "$dir"
    echo
    echo "## round $round, $side: load and lookups of $COUNT (bench/directory/run.sh)"
    BENCH_DIR=$dir PKI_BIN=${!bin} CACHE_MIB=2048 bash bench/directory/run.sh "$COUNT" 2>&1 |
      grep -E "^wall|^## (exists|fetch)|Requests/sec|^ +(50|99)%|load average before the run" || true
    rm -rf "$dir"
    echo "## round $round, $side: exists during a load in batches of 5,000 (bench/directory/during-load.sh)"
    PKI_BIN=${!bin} BATCHES=5000 bash bench/directory/during-load.sh 10000 |
      grep -E "^### |Requests/sec|^ +(50|90|99)%|^loader" || true
  done
done
