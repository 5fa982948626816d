#!/usr/bin/env bash
# A private DNS server for the DKIM tests: Debian's dnsmasq on 127.0.0.1 at a free port, with its
# own configuration in a temporary directory (no upstream, no /etc/hosts), serving the DKIM key
# records (selector `pki-test`) of the test domains customer.test and example.net, whose RSA keys
# it makes. PKI_TEST_DNS names the server (127.0.0.1:PORT), PKI_TEST_DKIM_DIR holds the private keys
# (DOMAIN.key, PKCS#1 PEM) and unpublished.key (a key no record names). Stopped and removed when
# the shell exits. Idempotent: a running one (PKI_TEST_DNS set and its directory present) is kept.
#
#   bash scripts/with-dns.sh cargo test -p pki-tests --test acme   # runs the command with it
#   source scripts/with-dns.sh                                      # in scripts/test.sh
#
# Installs Debian's dnsmasq-base when dnsmasq is missing.

dns_test_start() {
  if [ -n "${PKI_TEST_DNS:-}" ] && [ -d "${PKI_TEST_DKIM_DIR:-/nonexistent}" ]; then
    return 0
  fi
  if ! command -v dnsmasq >/dev/null 2>&1; then
    echo "installing: dnsmasq-base"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base
  fi
  PKI_TEST_DNS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pki-test-dns.XXXXXX")
  chmod 700 "$PKI_TEST_DNS_DIR"
  local port conf d p
  # A port free for UDP and for TCP (dnsmasq answers on both).
  port=$(python3 -c '
import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
')
  conf=$PKI_TEST_DNS_DIR/dnsmasq.conf
  printf 'port=%s\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\nno-poll\nuser=root\nlog-facility=%s/dnsmasq.log\n' \
    "$port" "$PKI_TEST_DNS_DIR" >"$conf"
  for d in customer.test example.net; do
    openssl genrsa -traditional -out "$PKI_TEST_DNS_DIR/$d.key" 2048 2>/dev/null
    p=$(openssl rsa -in "$PKI_TEST_DNS_DIR/$d.key" -pubout -outform DER 2>/dev/null | base64 -w0)
    # A TXT string holds at most 255 bytes: the record is two strings.
    printf 'txt-record=pki-test._domainkey.%s,"v=DKIM1; k=rsa; p=%s","%s"\n' "$d" "${p:0:200}" "${p:200}" >>"$conf"
  done
  openssl genrsa -traditional -out "$PKI_TEST_DNS_DIR/unpublished.key" 2048 2>/dev/null
  dnsmasq --conf-file="$conf" --pid-file="$PKI_TEST_DNS_DIR/dnsmasq.pid" \
    || { cat "$PKI_TEST_DNS_DIR/dnsmasq.log" >&2 2>/dev/null; return 1; }
  export PKI_TEST_DNS=127.0.0.1:$port PKI_TEST_DKIM_DIR=$PKI_TEST_DNS_DIR
  local previous
  previous=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT$//")
  # shellcheck disable=SC2064
  trap "dns_test_stop; $previous" EXIT
  echo "test DNS (dnsmasq $(dnsmasq --version | awk 'NR==1 {print $3}')) on $PKI_TEST_DNS, in $PKI_TEST_DNS_DIR"
}

dns_test_stop() {
  if [ -n "${PKI_TEST_DNS_DIR:-}" ] && [ -d "$PKI_TEST_DNS_DIR" ]; then
    [ -f "$PKI_TEST_DNS_DIR/dnsmasq.pid" ] && kill "$(cat "$PKI_TEST_DNS_DIR/dnsmasq.pid")" 2>/dev/null || true
    rm -rf "$PKI_TEST_DNS_DIR"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -gt 0 ] || { echo "usage: bash $0 COMMAND [ARG...]" >&2; exit 2; }
  dns_test_start
  status=0
  "$@" || status=$?
  exit "$status"
else
  dns_test_start
fi
