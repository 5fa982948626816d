#!/usr/bin/env bash
# A private Postfix for the tests that send mail: its own config_directory, queue_directory and
# data_directory in a temporary directory, listening on 127.0.0.1 at free ports only, delivering
# every address of the test domains (PKI_TEST_MAIL_DOMAINS, default "example.com example.org
# bank.example customer.test") into one Maildir (virtual(8) maps allow no per-address substitution; tests find
# their messages by Message-ID or by the Delivered-To header Postfix adds); stopped and removed when the shell exits. No
# mail leaves the machine: there is no relay and no other destination (anything else bounces).
#
#   bash scripts/with-mail.sh cargo test -p pki-tests --test sealed_mail   # runs the command with it
#   source scripts/with-mail.sh                                             # in scripts/test.sh
#
# Exports:
#   PKI_TEST_SMTP      127.0.0.1:PORT of its SMTP listener (no TLS, no authentication)
#   PKI_TEST_SMTP_STARTTLS  127.0.0.1:PORT of a listener that takes nothing before STARTTLS, offers
#                      AUTH PLAIN and LOGIN only after it, and refuses (5xx) the RCPT of a client
#                      that did not authenticate
#   PKI_TEST_SMTPS     127.0.0.1:PORT of the same with TLS from the first byte (implicit TLS)
#   PKI_TEST_SMTP_CA   the PEM of the throwaway CA that signed both listeners' certificate (P-256,
#                      subjectAltName IP:127.0.0.1 and DNS:localhost): the client's trust anchor
#   PKI_TEST_SMTP_USER the one SASL user of both: relay-user, the login as is (no realm to add)
#   PKI_TEST_SMTP_PASSWORD_FILE  a file whose first line is its password
#   PKI_TEST_MAILDIR   the Maildir every message goes to: $PKI_TEST_MAILDIR/{new,cur,tmp}
#   PKI_TEST_MAIL_DIR  the instance's directory (etc/, spool/, data/, mail/, tls/, postfix.log)
#   PKI_TEST_ACME_SMTP   127.0.0.1:PORT where Postfix relays mail for PKI_TEST_ACME_DOMAIN: the
#                        CA's `[acme.smtp] listen` of the ACME test that receives challenge replies
#                        through the MTA (nothing listens there until that test's `pki serve` does)
#   PKI_TEST_ACME_DOMAIN the domain of the CA's challenge address (acme-replies.test), the one
#                        domain Postfix relays, to PKI_TEST_ACME_SMTP only
#
# Extending it (for other suites, e.g. ACME's e-mail challenge):
#   PKI_TEST_MAIL_DOMAINS="a.example b.example"   before sourcing: the domains delivered locally;
#   PKI_TEST_MAIL_MAIN_EXTRA=$'line\nline'         before sourcing: more main.cf lines (say
#                                                   smtpd_milters = inet:127.0.0.1:8891 for a DKIM
#                                                   signer or verifier such as OpenDKIM);
#   mail_test_listen 127.0.0.1:PORT [-o name=value ...]   after: one more SMTP listener (another
#                                                   port, its own smtpd options), picked up at once.
#
# Needs root (Postfix's master starts as root and drops to the user `postfix`). Installs Debian's
# postfix when missing, preseeded "No configuration" so that the package starts no system-wide
# instance, and sasl2-bin (saslpasswd2) and the Cyrus sasldb plugin. Idempotent: sourcing it again
# while its instance runs changes nothing (an instance without the TLS listeners gets them).

mail_test_installed() {
  [ -x /usr/sbin/postfix ] && [ -x /usr/lib/postfix/sbin/master ] && id postfix >/dev/null 2>&1 &&
    command -v openssl >/dev/null 2>&1 && command -v saslpasswd2 >/dev/null 2>&1 &&
    compgen -G '/usr/lib/*/sasl2/libsasldb.so*' >/dev/null &&
    compgen -G '/usr/lib/*/sasl2/libplain.so*' >/dev/null && compgen -G '/usr/lib/*/sasl2/liblogin.so*' >/dev/null
}

mail_test_install() {
  mail_test_installed && return 0
  echo "installing: postfix openssl sasl2-bin libsasl2-modules libsasl2-modules-db"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix openssl sasl2-bin libsasl2-modules libsasl2-modules-db
  mail_test_installed || { echo "postfix, openssl, saslpasswd2 or the Cyrus sasldb/PLAIN/LOGIN plugins are missing" >&2; return 1; }
}

# The SMTP port answers with a 220 greeting; with a CA file, after a TLS handshake (implicit TLS)
# that verifies the server against it.
mail_test_answers() {
  python3 - "$@" <<'EOF' >/dev/null 2>&1
import socket, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=2)
if len(sys.argv) > 2:
    s = ssl.create_default_context(cafile=sys.argv[2]).wrap_socket(s, server_hostname=host)
sys.exit(0 if s.recv(4).startswith(b"220") else 1)
EOF
}

mail_test_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The TLS listeners' files in DIR (made once): a throwaway CA (tls/ca.pem, its key kept root-only)
# and the server certificate it signs (tls/server.pem, tls/server.key readable by postfix); Cyrus's
# smtpd.conf and the sasldb of the one user in etc/sasl/ (Debian's smtpd reads its SASL config from
# $config_directory/sasl whatever cyrus_sasl_config_path says), its password etc/sasl/password (root only).
mail_test_tls_files() {
  local dir=$1 realm=pki-test.invalid
  if [ ! -f "$dir/tls/server.pem" ]; then
    mkdir -p "$dir/tls"
    cat >"$dir/tls/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    (
      cd "$dir/tls" && umask 077 &&
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key &&
        openssl req -x509 -new -config openssl.cnf -extensions ca -key ca.key -sha256 -days 3650 \
          -subj "/CN=pki-test mail CA" -out ca.pem &&
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key &&
        openssl req -new -config openssl.cnf -key server.key -subj "/CN=localhost" -out server.csr &&
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
          -sha256 -days 3650 -extfile openssl.cnf -extensions server -out server.pem &&
        chmod 644 ca.pem server.pem && chown root:postfix server.key && chmod 640 server.key
    ) >"$dir/tls.log" 2>&1 || { cat "$dir/tls.log" >&2; rm -f "$dir/tls/server.pem"; return 1; }
  fi
  if [ ! -f "$dir/etc/sasl/sasldb2" ]; then
    # smtpd (user postfix) reads smtpd.conf and the sasldb; Cyrus looks a bare login up as
    # login@realm, the realm being smtpd_sasl_local_domain: the user is made in that realm.
    mkdir -p "$dir/etc/sasl"
    chown root:postfix "$dir/etc/sasl"
    chmod 750 "$dir/etc/sasl"
    {
      echo "pwcheck_method: auxprop"
      echo "auxprop_plugin: sasldb"
      echo "mech_list: PLAIN LOGIN"
      echo "sasldb_path: $dir/etc/sasl/sasldb2"
    } >"$dir/etc/sasl/smtpd.conf"
    (umask 077 && openssl rand -hex 16 >"$dir/etc/sasl/password")
    tr -d '\n' <"$dir/etc/sasl/password" |
      saslpasswd2 -p -c -f "$dir/etc/sasl/sasldb2" -u "$realm" relay-user >"$dir/sasl.log" 2>&1 ||
      { cat "$dir/sasl.log" >&2; rm -f "$dir/etc/sasl/sasldb2"; return 1; }
    chown root:postfix "$dir/etc/sasl/smtpd.conf" "$dir/etc/sasl/sasldb2"
    chmod 640 "$dir/etc/sasl/smtpd.conf" "$dir/etc/sasl/sasldb2"
  fi
}

# The master.cf lines of the two TLS listeners: STARTTLS required on STARTTLS_PORT, implicit TLS on
# SMTPS_PORT; SASL after TLS only, and no RCPT without it. Options of these smtpd processes only:
# main.cf (and so the plain listener) has neither TLS nor SASL.
mail_test_tls_services() {
  local dir=$1 starttls_port=$2 smtps_port=$3 opts
  opts="-o smtpd_tls_security_level=encrypt -o smtpd_tls_cert_file=$dir/tls/server.pem"
  opts+=" -o smtpd_tls_key_file=$dir/tls/server.key -o smtpd_tls_auth_only=yes"
  opts+=" -o smtpd_sasl_auth_enable=yes -o smtpd_sasl_type=cyrus -o smtpd_sasl_path=smtpd"
  opts+=" -o cyrus_sasl_config_path=$dir/etc/sasl -o smtpd_sasl_local_domain=pki-test.invalid"
  opts+=" -o smtpd_sasl_security_options=noanonymous"
  opts+=" -o smtpd_client_restrictions=permit_sasl_authenticated,reject"
  opts+=" -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
  echo "127.0.0.1:$starttls_port inet n - n - - smtpd -o syslog_name=postfix/starttls $opts"
  echo "127.0.0.1:$smtps_port inet n - n - - smtpd -o syslog_name=postfix/smtps -o smtpd_tls_wrappermode=yes $opts"
}

# mail_test_all_answer PLAIN STARTTLS SMTPS CA: all three listeners answer.
mail_test_all_answer() {
  mail_test_answers "$1" && mail_test_answers "$2" && mail_test_answers "$3" "$4"
}

# The instance in PKI_TEST_MAIL_DIR runs, but without the TLS listeners (started by an older copy of
# this script): they are added to it.
mail_test_add_tls() {
  local dir=$PKI_TEST_MAIL_DIR starttls_port smtps_port i
  [ "$(id -u)" = 0 ] || { echo "scripts/with-mail.sh: adding the TLS listeners needs root" >&2; return 1; }
  mail_test_install || return 1
  mail_test_tls_files "$dir" || return 1
  starttls_port=$(mail_test_free_port)
  smtps_port=$(mail_test_free_port)
  mail_test_tls_services "$dir" "$starttls_port" "$smtps_port" >>"$dir/etc/master.cf"
  postfix -c "$dir/etc" reload >/dev/null 2>&1
  for i in $(seq 50); do
    mail_test_all_answer "$PKI_TEST_SMTP" "127.0.0.1:$starttls_port" "127.0.0.1:$smtps_port" "$dir/tls/ca.pem" && break
    sleep 0.1
  done
  mail_test_all_answer "$PKI_TEST_SMTP" "127.0.0.1:$starttls_port" "127.0.0.1:$smtps_port" "$dir/tls/ca.pem" ||
    { echo "the test Postfix does not answer on 127.0.0.1:$starttls_port and 127.0.0.1:$smtps_port" >&2; return 1; }
  mail_test_export_tls "$dir" "$starttls_port" "$smtps_port"
}

mail_test_export_tls() {
  export PKI_TEST_SMTP_STARTTLS="127.0.0.1:$2"
  export PKI_TEST_SMTPS="127.0.0.1:$3"
  export PKI_TEST_SMTP_CA="$1/tls/ca.pem"
  export PKI_TEST_SMTP_USER=relay-user
  export PKI_TEST_SMTP_PASSWORD_FILE="$1/etc/sasl/password"
}

mail_test_start() {
  if [ -n "${PKI_TEST_SMTP:-}" ] && [ -d "${PKI_TEST_MAIL_DIR:-/nonexistent}" ] && mail_test_answers "$PKI_TEST_SMTP"; then
    if [ -n "${PKI_TEST_SMTP_STARTTLS:-}" ] && [ -n "${PKI_TEST_SMTPS:-}" ] && [ -f "${PKI_TEST_SMTP_CA:-/nonexistent}" ] &&
      [ -n "${PKI_TEST_SMTP_USER:-}" ] && [ -f "${PKI_TEST_SMTP_PASSWORD_FILE:-/nonexistent}" ] &&
      mail_test_answers "$PKI_TEST_SMTP_STARTTLS" && mail_test_answers "$PKI_TEST_SMTPS" "$PKI_TEST_SMTP_CA"; then
      return 0
    fi
    mail_test_add_tls
    return
  fi
  [ "$(id -u)" = 0 ] || { echo "scripts/with-mail.sh: Postfix's master must start as root" >&2; return 1; }
  mail_test_install || return 1
  local dir port domains uid gid acme_port acme_domain starttls_port smtps_port
  dir=$(mktemp -d "${TMPDIR:-/tmp}/pki-test-mail.XXXXXX")
  chmod 755 "$dir"
  mkdir -p "$dir/etc" "$dir/spool" "$dir/data" "$dir/mail"
  port=$(mail_test_free_port)
  starttls_port=$(mail_test_free_port)
  smtps_port=$(mail_test_free_port)
  domains=${PKI_TEST_MAIL_DOMAINS:-example.com example.org bank.example customer.test}
  # The ACME challenge address's domain is relayed to the CA's own SMTP listener, on loopback.
  acme_port=$(mail_test_free_port)
  acme_domain=acme-replies.test
  # Mailboxes belong to `nobody`; the tests run as root and read them.
  uid=$(id -u nobody)
  gid=$(id -g nobody)
  chown "$uid:$gid" "$dir/mail"
  chown postfix "$dir/data"
  {
    echo "compatibility_level = 3.6"
    echo "queue_directory = $dir/spool"
    echo "data_directory = $dir/data"
    echo "command_directory = /usr/sbin"
    echo "daemon_directory = /usr/lib/postfix/sbin"
    echo "shlib_directory = /usr/lib/postfix"
    echo "meta_directory = /etc/postfix"
    echo "mail_owner = postfix"
    echo "setgid_group = postdrop"
    echo "inet_interfaces = loopback-only"
    echo "inet_protocols = ipv4"
    echo "myhostname = mail.pki-test.invalid"
    echo "mydomain = pki-test.invalid"
    echo "myorigin = \$myhostname"
    echo "mydestination ="
    echo "mynetworks = 127.0.0.0/8"
    echo "relayhost ="
    echo "relay_domains = $acme_domain"
    echo "transport_maps = inline:{$acme_domain=smtp:[127.0.0.1]:$acme_port}"
    # A reply the CA's listener is not up for yet is tried again within seconds, not minutes.
    echo "queue_run_delay = 1s"
    echo "minimal_backoff_time = 1s"
    echo "maximal_backoff_time = 5s"
    echo "default_transport = error:this test instance delivers only to its test domains"
    echo "virtual_mailbox_domains = ${domains// /, }"
    echo "virtual_mailbox_base = $dir/mail"
    echo "virtual_mailbox_maps = static:all/"
    echo "alias_maps ="
    echo "alias_database ="
    echo "virtual_uid_maps = static:$uid"
    echo "virtual_gid_maps = static:$gid"
    echo "virtual_mailbox_limit = 0"
    echo "message_size_limit = 0"
    echo "smtpd_relay_restrictions = permit_mynetworks, reject"
    echo "smtpd_banner = \$myhostname ESMTP pki-test"
    echo "biff = no"
    echo "maillog_file_prefixes = $dir"
    echo "maillog_file = $dir/postfix.log"
    printf '%s\n' "${PKI_TEST_MAIL_MAIN_EXTRA:-}"
  } >"$dir/etc/main.cf"
  # The package's services without chroot (the temporary queue has no chroot files), the system
  # SMTP listener replaced by ours, and postlog for maillog_file.
  awk -v listen="127.0.0.1:$port" '
    /^#/ || /^[ \t]/ || NF < 8 { print; next }
    $1 == "smtp" && $2 == "inet" { $1 = listen }
    { $5 = "n"; print }
  ' /etc/postfix/master.cf >"$dir/etc/master.cf"
  grep -q '^postlog ' "$dir/etc/master.cf" || echo "postlog unix-dgram n - n - 1 postlogd" >>"$dir/etc/master.cf"
  # The STARTTLS and implicit-TLS listeners with SASL, their TLS and SASL settings theirs alone.
  mail_test_tls_files "$dir" || return 1
  mail_test_tls_services "$dir" "$starttls_port" "$smtps_port" >>"$dir/etc/master.cf"
  postfix -c "$dir/etc" check >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; return 1; }
  postfix -c "$dir/etc" start >"$dir/start.log" 2>&1 || { cat "$dir/start.log" >&2; return 1; }
  local i
  for i in $(seq 50); do
    mail_test_all_answer "127.0.0.1:$port" "127.0.0.1:$starttls_port" "127.0.0.1:$smtps_port" "$dir/tls/ca.pem" && break
    sleep 0.1
  done
  mail_test_all_answer "127.0.0.1:$port" "127.0.0.1:$starttls_port" "127.0.0.1:$smtps_port" "$dir/tls/ca.pem" ||
    { echo "the test Postfix does not answer on 127.0.0.1:$port, :$starttls_port and :$smtps_port" >&2
      postfix -c "$dir/etc" stop >/dev/null 2>&1; return 1; }
  export PKI_TEST_MAIL_DIR=$dir
  export PKI_TEST_SMTP="127.0.0.1:$port"
  export PKI_TEST_MAILDIR="$dir/mail/all"
  export PKI_TEST_ACME_SMTP="127.0.0.1:$acme_port"
  export PKI_TEST_ACME_DOMAIN=$acme_domain
  mail_test_export_tls "$dir" "$starttls_port" "$smtps_port"
  # Runs after whatever the shell runs at exit already (say, the PostgreSQL of with-postgres.sh).
  local previous=""
  eval "set -- $(trap -p EXIT)"
  [ $# -ge 3 ] && previous=$3
  # shellcheck disable=SC2064
  trap "mail_test_stop${previous:+; $previous}" EXIT
  echo "test Postfix ($(postconf -d -h mail_version 2>/dev/null)) on $PKI_TEST_SMTP (STARTTLS $PKI_TEST_SMTP_STARTTLS, SMTPS $PKI_TEST_SMTPS), mailboxes in $PKI_TEST_MAILDIR"
}

# One more SMTP listener: mail_test_listen 127.0.0.1:PORT [-o name=value ...]
mail_test_listen() {
  local addr=$1
  shift
  case "$addr" in
    127.*:*) ;;
    *) echo "mail_test_listen: listen on a loopback address only (got $addr)" >&2; return 1 ;;
  esac
  { printf '%s inet n - n - - smtpd' "$addr"; printf ' %s' "$@"; echo; } >>"$PKI_TEST_MAIL_DIR/etc/master.cf"
  postfix -c "$PKI_TEST_MAIL_DIR/etc" reload >/dev/null 2>&1
  local i
  for i in $(seq 50); do
    mail_test_answers "$addr" && return 0
    sleep 0.1
  done
  echo "mail_test_listen: nothing answers on $addr" >&2
  return 1
}

mail_test_stop() {
  if [ -n "${PKI_TEST_MAIL_DIR:-}" ] && [ -d "$PKI_TEST_MAIL_DIR" ]; then
    postfix -c "$PKI_TEST_MAIL_DIR/etc" stop >/dev/null 2>&1 || true
    local i
    for i in $(seq 50); do
      [ -f "$PKI_TEST_MAIL_DIR/spool/pid/master.pid" ] || break
      sleep 0.1
    done
    rm -rf "$PKI_TEST_MAIL_DIR"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Run as a script: start, run the command, stop.
  set -euo pipefail
  [ $# -gt 0 ] || { echo "usage: bash $0 COMMAND [ARG...]" >&2; exit 2; }
  mail_test_start
  status=0
  "$@" || status=$?
  exit "$status"
else
  mail_test_start
fi
