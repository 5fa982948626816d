#!/usr/bin/env bash
# Runs every test of the project, installing first what the tests need. Idempotent.
# CI calls exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-off build on CI keeps no incremental state: that would be gigabytes written for nothing.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
# A clean build with its test binaries takes about 4 GB of disk, and the tests' data some more.
# Said first, so that a full disk is named as such rather than found later as a linker's bus error.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$target_dir"
free_gb=$(df -P -BG "$target_dir" | awk 'NR == 2 { sub(/G$/, "", $4); print $4 }')
echo "disk: ${free_gb} GB free for $target_dir"
if [ "$free_gb" -lt 6 ]; then
  echo "WARNING: a clean build and its tests need about 6 GB in $target_dir and only ${free_gb} GB are free" >&2
fi

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# admin-web: the console's browser test drives Debian's Chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# ldap-directory: the LDAP tests drive OpenLDAP's ldapsearch and ldapdelete.
command -v ldapsearch >/dev/null 2>&1 || need_apt+=(ldap-utils)
# hsm-sim / pki-tests: the PKCS#11 backend runs on SoftHSM2 tokens made per test; pkcs11-tool
# (OpenSC) lists their objects.
{ command -v softhsm2-util >/dev/null 2>&1 && [ -f /usr/lib/softhsm/libsofthsm2.so ]; } || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need_apt+=(opensc)
# pki-tests: the CA-side certificates' renewal runs `pki serve` and OpenSSL months ahead with
# libfaketime preloaded (crates/pki-tests/tests/ca_lifecycle.rs).
[ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(faketime)
# cerdb: the PostgreSQL engine's tests run on a private server (started below).
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need_apt+=(postgresql)
# sealed mail: NSS's cmsutil decrypts and verifies sealed messages (crates/pki-tests/tests/sealed_mail.rs).
command -v cmsutil >/dev/null 2>&1 || need_apt+=(libnss3-tools)
# mail relay: saslpasswd2 and Cyrus's sasldb plugin for the test Postfix's SASL logins (scripts/with-mail.sh).
command -v saslpasswd2 >/dev/null 2>&1 || need_apt+=(sasl2-bin)
compgen -G '/usr/lib/*/sasl2/libsasldb.so*' >/dev/null || need_apt+=(libsasl2-modules-db)
# jq reads the JSON log lines of tests/metrics.rs.
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
# promtool checks /metrics in tests/metrics.rs. Debian ships it only in the prometheus package:
# installed without its recommends (no node exporter), and the server the package may have started
# is stopped again — the tests need the checker, not a monitoring server on 0.0.0.0:9090.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing: prometheus (for promtool)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
  service prometheus stop >/dev/null 2>&1 || true
fi

# directory (cerdb): the OpenAPI test runs schemathesis and openapi-spec-validator against the
# live server (crates/pki-tests/tests/directory_openapi.rs). Pinned.
if ! st --version 2>/dev/null | grep -q ' 4\.32\.5$' || ! command -v openapi-spec-validator >/dev/null 2>&1; then
  echo "installing: schemathesis==4.32.5 openapi-spec-validator==0.9.0"
  python3 -m pip install -q schemathesis==4.32.5 openapi-spec-validator==0.9.0
fi

# ldap-directory: the LDAP tests also read the directory with Python's ldap3 client
# (crates/pki-tests/tests/ldap.rs). Pinned.
if ! python3 -c 'import ldap3, sys; sys.exit(ldap3.__version__ != "2.9.1")' >/dev/null 2>&1; then
  echo "installing: ldap3==2.9.1"
  python3 -m pip install -q ldap3==2.9.1
fi

# ca-core: pkilint's CA profiles lint the default root and issuing CA
# (crates/pki-tests/tests/ca_lifecycle.rs). Pinned.
if ! python3 -c 'import pkilint, importlib.metadata as m, sys; sys.exit(m.version("pkilint") != "0.13.3")' >/dev/null 2>&1; then
  echo "installing: pkilint==0.13.3"
  python3 -m pip install -q pkilint==0.13.3
fi

# acme: the ACME tests drive the server with certbot's `acme` library, an independent RFC 8555
# client (crates/pki-tests/tests/acme.rs). Pinned.
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("acme") != "5.9.0")' >/dev/null 2>&1; then
  echo "installing: acme==5.9.0"
  python3 -m pip install -q acme==5.9.0
fi

# acme: the DKIM-signed challenge replies are signed by dkimpy (crates/pki-tests/tests/acme.rs). Pinned.
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("dkimpy") != "1.1.8")' >/dev/null 2>&1; then
  echo "installing: dkimpy==1.1.8"
  python3 -m pip install -q dkimpy==1.1.8
fi

# acme: a private DNS server (dnsmasq) serving the test domains' DKIM keys, stopped and removed
# when this script exits; PKI_TEST_DNS names it (scripts/with-dns.sh).
source scripts/with-dns.sh

# cerdb: a private PostgreSQL for the PostgreSQL engine's tests, in a temporary directory, stopped
# and removed when this script exits; PKI_TEST_DATABASE_URL names it (scripts/with-postgres.sh).
source scripts/with-postgres.sh

# sealed mail: a private Postfix on loopback that delivers the test domains to a Maildir;
# PKI_TEST_SMTP and PKI_TEST_MAILDIR name it (scripts/with-mail.sh). Installs postfix when missing.
source scripts/with-mail.sh

# Code and supply-chain gates (issue 19): rustfmt, clippy with warnings as errors, cargo-deny's
# bans, licences and sources, and the advisories check (scripts/gates.sh). A failed gate fails the
# run; the tests below still run.
status=0
bash scripts/gates.sh all || status=$?

# The end-to-end tests drive the real binary.
cargo build --bin pki
cargo test --workspace --no-fail-fast || status=$?
# tests/planted_loss.rs builds a planted pki and then the usual one again; built once more here, so
# that the reruns below never get the planted one, even after that test failed halfway.
cargo build --bin pki

# Two reruns of end-to-end suites, side by side (each waits mostly on the processes it drives):
# the test binaries built by the run above, run directly, each lane's output shown when it ends.
#
# Lane 1: issuance and profiles, escrow and PKCS#12 recovery, revocation and CRLs, OCSP, the TSA,
# the console's TLS and TOTP (sealed secrets), crash durability, the key-material scan and the
# OCSP signer's renewal, once more with every CA key on a SoftHSM2 token (PKI_TESTS_HSM).
# Lane 2: issuance and profiles, revocation and CRLs, OCSP, the TSA, the directory, console login,
# the crash loop, ACME with mailbox validation (challenge mails through the private Postfix),
# sealed mail, and the PKCS#11 suite with its move of a soft key store onto a token, once more on
# PostgreSQL: every test's CA in a database of its own on the private server started above, its
# keys sealed in that database (PKI_TESTS_BACKEND).
declare -A TEST_BIN
while IFS=$'\t' read -r name exe; do TEST_BIN[$name]=$exe; done < <(
  cargo test -p pki-tests --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"] + "\t" + m["executable"])
')
PKI_BIN_BUILT="${CARGO_TARGET_DIR:-$PWD/target}/debug/pki"
# None built: the build failed above, and its error is what to read; the lanes would only say,
# test by test, that there is nothing to run.
if [ -z "${TEST_BIN[*]:-}" ]; then
  echo "the end-to-end lanes did not run: no pki-tests test binary was built (the build's error is above)"
  exit 1
fi
# lane LOG SETTING TEST...: the named test binaries, one after the other, with SETTING (VAR=value).
lane() {
  local log=$1 setting=$2 rc=0 t
  shift 2
  for t in "$@"; do
    if [ -z "${TEST_BIN[$t]:-}" ]; then
      echo "no test binary named $t (cargo test -p pki-tests --no-run)" >>"$log"
      rc=1
      continue
    fi
    echo "     Running $t with $setting" >>"$log"
    (cd crates/pki-tests && env "$setting" PKI_TESTS_BIN="$PKI_BIN_BUILT" "${TEST_BIN[$t]}") >>"$log" 2>&1 || rc=1
  done
  return $rc
}
LANES=$(mktemp -d /tmp/pki-test-lanes.XXXXXX)
lane "$LANES/pkcs11.log" PKI_TESTS_HSM=pkcs11 smime_profiles revocation ocsp tsa console_tls \
  console_security crash_durability key_material ca_lifecycle &
lane1=$!
lane "$LANES/postgres.log" PKI_TESTS_BACKEND=postgres smime_profiles revocation ocsp tsa directory \
  console_security crash_loop acme sealed_mail hsm_pkcs11 &
lane2=$!
wait "$lane1" || status=1
cat "$LANES/pkcs11.log"
wait "$lane2" || status=1
cat "$LANES/postgres.log"
rm -rf "$LANES"
exit "$status"
