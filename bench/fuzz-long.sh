#!/usr/bin/env bash
# The long property-based fuzz run (issue 19): every parser's fuzz test (fuzz-support) with
# CASES cases each (default 1,000,000), in the release profile, in rounds of CHUNK cases
# (default 100,000) with a fresh seed per round and per test, the parsers taking turns, so that an
# interrupted run still tells how far each parser got. Prints per round and parser the cases, the
# time, the rate and the seed, then a summary; exits non-zero on the first failure (whose seed
# is printed and kept in the crate's proptest-regressions/).
#
# Usage: bash bench/fuzz-long.sh [CASES] [CHUNK]   (honours CARGO_TARGET_DIR)
#        FUZZ_ONLY="pki ca-core" bash bench/fuzz-long.sh ...   only the groups of those packages
#        (pki: the admin socket's frames and the configuration file), in one lane
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${1:-1000000}
CHUNK=${2:-100000}
[ "$CHUNK" -le "$CASES" ] || CHUNK=$CASES
rounds=$(( (CASES + CHUNK - 1) / CHUNK ))

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cases per parser: $CASES in $rounds rounds of $CHUNK; started $(date -u +%FT%TZ)"

# Each group: the cargo arguments that select one test binary, and the tests to run in it.
groups=(
  "-p ca-core --test fuzz|csr_checks_never_panic ca_config_parsing_never_panics"
  "-p ocsp-responder --test fuzz|property_"
  "-p tsa --test fuzz|property_"
  "-p cerdb --lib|directory::tests::fuzz::"
  "-p admin-web --lib|forms::fuzz::"
  "-p ldap-directory --test fuzz|ldap_messages_never_panic dns_never_panic"
  "-p pki --bin pki|admin_socket::fuzz:: settings::fuzz::"
)
if [ -n "${FUZZ_ONLY:-}" ]; then
  selected=()
  for g in "${groups[@]}"; do
    for pkg in $FUZZ_ONLY; do
      case "${g%%|*} " in "-p $pkg "*) selected+=("$g") ;; esac
    done
  done
  [ "${#selected[@]}" -gt 0 ] || { echo "FUZZ_ONLY=$FUZZ_ONLY selects no group" >&2; exit 2; }
  groups=("${selected[@]}")
  echo "only: $(for g in "${groups[@]}"; do printf '%s; ' "${g%%|*}"; done)"
fi
for g in "${groups[@]}"; do
  # shellcheck disable=SC2086
  cargo test -q --release --no-run ${g%%|*}
done

log=$(mktemp)
trap 'rm -f "$log" "$log".*' EXIT
# Runs every round of the groups given (by index), one after the other.
lane() {
  local name=$1; shift
  for round in $(seq 1 "$rounds"); do
    for i in "$@"; do
      local g=${groups[$i]}
      # shellcheck disable=SC2086
      if ! PROPTEST_CASES=$CHUNK cargo test -q --release ${g%%|*} -- ${g#*|} --nocapture --test-threads=2 >"$log.$name" 2>&1; then
        cat "$log.$name"
        echo "FAILED in round $round: ${g%%|*}"
        return 1
      fi
      # (cargo's -q progress dots may stand before a line: only the line from "fuzz" on is kept)
      grep -oE 'fuzz [a-z-]+: [0-9]+ cases passed.*' "$log.$name" | sed "s/^/round $round: /" | tee -a "$log"
    done
  done
}
# Two lanes: the configuration file's reader (slowest per case: a file written and read each
# time) beside all the others, so that it does not hold them up.
status=0
if [ -n "${FUZZ_ONLY:-}" ]; then
  lane a $(seq 0 $(( ${#groups[@]} - 1 ))) || status=1
else
  lane a 0 1 2 3 4 5 & a=$!
  lane b 6 & b=$!
  wait "$a" || status=1
  wait "$b" || status=1
fi
[ "$status" -eq 0 ] || exit 1

echo "finished $(date -u +%FT%TZ); summary (cases, seconds, cases/s):"
sed -E 's/^round [0-9]+: fuzz ([a-z-]+): ([0-9]+) cases passed in ([0-9.]+)(ms|s|µs) .*/\1 \2 \3 \4/' "$log" |
  awk '{ t = ($4 == "ms") ? $3 / 1000 : ($4 == "µs" ? $3 / 1e6 : $3); n[$1] += $2; s[$1] += t }
       END { for (k in n) printf "  %-16s %10d cases %9.1f s %9.0f /s\n", k, n[k], s[k], n[k] / s[k] }' | sort
