#!/usr/bin/env bash
# A private Postfix for the tests that send mail: its own config_directory, queue_directory and
# data_directory in a temporary directory, listening on 127.0.0.1 at a free port only, delivering
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
#   PKI_TEST_MAILDIR   the Maildir every message goes to: $PKI_TEST_MAILDIR/{new,cur,tmp}
#   PKI_TEST_MAIL_DIR  the instance's directory (etc/, spool/, data/, mail/, postfix.log)
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
# instance. Idempotent: sourcing it again while its instance runs changes nothing.

mail_test_installed() {
  [ -x /usr/sbin/postfix ] && [ -x /usr/lib/postfix/sbin/master ] && id postfix >/dev/null 2>&1
}

mail_test_install() {
  mail_test_installed && return 0
  echo "installing: postfix"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix
  mail_test_installed || { echo "postfix installed, but /usr/sbin/postfix or the user postfix is missing" >&2; return 1; }
}

# The SMTP port answers with a 220 greeting.
mail_test_answers() {
  python3 - "$1" <<'EOF' >/dev/null 2>&1
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=2)
sys.exit(0 if s.recv(4).startswith(b"220") else 1)
EOF
}

mail_test_start() {
  if [ -n "${PKI_TEST_SMTP:-}" ] && [ -d "${PKI_TEST_MAIL_DIR:-/nonexistent}" ] && mail_test_answers "$PKI_TEST_SMTP"; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || { echo "scripts/with-mail.sh: Postfix's master must start as root" >&2; return 1; }
  mail_test_install || return 1
  local dir port domains uid gid acme_port acme_domain
  dir=$(mktemp -d "${TMPDIR:-/tmp}/pki-test-mail.XXXXXX")
  chmod 755 "$dir"
  mkdir -p "$dir/etc" "$dir/spool" "$dir/data" "$dir/mail"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  domains=${PKI_TEST_MAIL_DOMAINS:-example.com example.org bank.example customer.test}
  # The ACME challenge address's domain is relayed to the CA's own SMTP listener, on loopback.
  acme_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
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
  postfix -c "$dir/etc" check >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; return 1; }
  postfix -c "$dir/etc" start >"$dir/start.log" 2>&1 || { cat "$dir/start.log" >&2; return 1; }
  local i
  for i in $(seq 50); do
    mail_test_answers "127.0.0.1:$port" && break
    sleep 0.1
  done
  mail_test_answers "127.0.0.1:$port" || { echo "the test Postfix does not answer on 127.0.0.1:$port" >&2; return 1; }
  export PKI_TEST_MAIL_DIR=$dir
  export PKI_TEST_SMTP="127.0.0.1:$port"
  export PKI_TEST_MAILDIR="$dir/mail/all"
  export PKI_TEST_ACME_SMTP="127.0.0.1:$acme_port"
  export PKI_TEST_ACME_DOMAIN=$acme_domain
  # Runs after whatever the shell runs at exit already (say, the PostgreSQL of with-postgres.sh).
  local previous=""
  eval "set -- $(trap -p EXIT)"
  [ $# -ge 3 ] && previous=$3
  # shellcheck disable=SC2064
  trap "mail_test_stop${previous:+; $previous}" EXIT
  echo "test Postfix ($(postconf -d -h mail_version 2>/dev/null)) on $PKI_TEST_SMTP, mailboxes in $PKI_TEST_MAILDIR"
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
