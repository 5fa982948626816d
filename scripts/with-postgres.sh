#!/usr/bin/env bash
# A private PostgreSQL for the tests of the PostgreSQL engine: a fresh cluster in a temporary
# directory, listening on 127.0.0.1 at a free port and on a Unix socket in that directory only,
# fsync on, password authentication over TCP, TLS offered with a certificate from a CA made for the
# run. PKI_TEST_DATABASE_URL names it (with its random password), PKI_TEST_PG_CA that CA's
# certificate; the cluster is stopped and its directory removed when the shell exits.
#
#   bash scripts/with-postgres.sh cargo test -p cerdb   # runs the command with the cluster
#   source scripts/with-postgres.sh                     # in scripts/test.sh: for the rest of it
#
# PKI_TEST_PG_SETTINGS adds server settings (`-c name=value ...`; the benchmarks give the server
# the memory the embedded engine gets).
#
# Installs Debian's postgresql when no server binaries are in /usr/lib/postgresql/*/bin. As root,
# the cluster runs as the user `postgres` (which the package creates); otherwise as the caller.

pg_test_bin() {
  local d found=""
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && found=$d
  done
  printf '%s' "$found"
}

pg_test_start() {
  local bin
  bin=$(pg_test_bin)
  if [ -z "$bin" ]; then
    echo "installing: postgresql"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
    bin=$(pg_test_bin)
    [ -n "$bin" ] || { echo "postgresql installed, but no pg_ctl in /usr/lib/postgresql/*/bin" >&2; return 1; }
  fi
  local as_pg=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "running as root, but there is no user postgres to run the test cluster" >&2; return 1; }
    as_pg=(runuser -u postgres --)
  fi
  PKI_TEST_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pki-test-pg.XXXXXX")
  local password port
  password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
  printf '%s\n' "$password" >"$PKI_TEST_PG_DIR/pwfile"
  # TLS: a CA of this run's own and a server certificate for 127.0.0.1 that it issued, so that
  # tests can connect with sslmode=verify-full (PKI_TEST_PG_CA names the CA's certificate); plain
  # connections are still accepted.
  local tls=$PKI_TEST_PG_DIR/tls
  mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=pki test database CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>"$tls/openssl.log" \
    && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$tls/server.key" -out "$tls/server.csr" 2>>"$tls/openssl.log" \
    && printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tls/server.ext" \
    && openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -days 2 \
      -extfile "$tls/server.ext" -out "$tls/server.pem" 2>>"$tls/openssl.log" \
    || { cat "$tls/openssl.log" >&2; return 1; }
  rm -f "$tls/ca.key" "$tls/server.csr" "$tls/server.ext" "$tls/openssl.log"
  chmod 600 "$tls/server.key"
  [ ${#as_pg[@]} -eq 0 ] || chown -R postgres: "$PKI_TEST_PG_DIR"
  chmod 700 "$PKI_TEST_PG_DIR"
  "${as_pg[@]}" "$bin/initdb" -D "$PKI_TEST_PG_DIR/data" -U pki --pwfile="$PKI_TEST_PG_DIR/pwfile" \
    --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --no-locale >"$PKI_TEST_PG_DIR/initdb.log" \
    || { cat "$PKI_TEST_PG_DIR/initdb.log" >&2; return 1; }
  rm -f "$PKI_TEST_PG_DIR/pwfile"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # Every scenario of the suite opens a few connections: room for the tests running in parallel.
  "${as_pg[@]}" "$bin/pg_ctl" -D "$PKI_TEST_PG_DIR/data" -l "$PKI_TEST_PG_DIR/server.log" -w -s \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PKI_TEST_PG_DIR -c fsync=on -c max_connections=300 -c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key ${PKI_TEST_PG_SETTINGS:-}" \
    start || { cat "$PKI_TEST_PG_DIR/server.log" >&2; return 1; }
  PKI_TEST_PG_CTL=("${as_pg[@]}" "$bin/pg_ctl")
  export PKI_TEST_DATABASE_URL="postgres://pki:$password@127.0.0.1:$port/postgres"
  export PKI_TEST_PG_CA="$tls/ca.pem"
  # Runs before whatever the shell runs at exit already (say, the DNS server of with-dns.sh).
  local previous=""
  eval "set -- $(trap -p EXIT)"
  [ $# -ge 3 ] && previous=$3
  # shellcheck disable=SC2064
  trap "pg_test_stop${previous:+; $previous}" EXIT
  echo "test PostgreSQL ($("$bin/postgres" --version | awk '{print $3}')) on 127.0.0.1:$port, in $PKI_TEST_PG_DIR"
}

pg_test_stop() {
  if [ -n "${PKI_TEST_PG_DIR:-}" ] && [ -d "$PKI_TEST_PG_DIR" ]; then
    "${PKI_TEST_PG_CTL[@]}" -D "$PKI_TEST_PG_DIR/data" -m fast -w -s stop >/dev/null 2>&1 || true
    rm -rf "$PKI_TEST_PG_DIR"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Run as a script: start, run the command, stop.
  set -euo pipefail
  [ $# -gt 0 ] || { echo "usage: bash $0 COMMAND [ARG...]" >&2; exit 2; }
  pg_test_start
  status=0
  "$@" || status=$?
  exit "$status"
else
  pg_test_start
fi
