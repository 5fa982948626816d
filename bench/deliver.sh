#!/usr/bin/env bash
# Sealed mail handed to a relay: a bulk request of N messages to an RSA-2048 recipient, no
# timestamp, with "deliver": true through a private Postfix on loopback (scripts/with-mail.sh),
# beside the same bulk request without delivery (the sealing alone) and beside the raw ceiling of
# the relay: Python's smtplib handing N messages of the same size to the same Postfix, over one
# connection (as a bulk request hands them) and over a connection each. Two relays: plain SMTP,
# and STARTTLS with a SASL login (a certificate of the test Postfix's own CA, `ca_file`), as a
# bank's relay would want. Two messages: a one-time code (a line of text, about 6 KB sealed) and
# the statement of bench/seal.sh (2 KB of text and a 100 KB PDF, about 200 KB). Each as one bulk
# request and as single requests from 4 connections at once.
#
# Usage: bash bench/deliver.sh [N]   (default 200 messages a request; three requests of each)
# Honours CARGO_TARGET_DIR; PKI_BIN=/path/to/pki measures that binary instead of building one.
# Needs root (Postfix), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -n "${PKI_BIN:-}" ]; then
  PKI=$PKI_BIN
else
  cargo build -q --release --bin pki
  PKI="$TARGET/release/pki"
fi
[ "${PKI#/}" != "$PKI" ] || PKI="$PWD/$PKI"
# shellcheck source=../scripts/with-mail.sh
source scripts/with-mail.sh

repo=$PWD
# shellcheck source=sealed-mail-setup.sh
source bench/sealed-mail-setup.sh
bench_start deliver
echo "command: bash bench/deliver.sh $N"
echo
bench_sender
echo "bench-password-2026" >pw
"$PKI" issue --email rsa@example.com --usage encryption --generate --key-type rsa2048 --p12 rsa.p12 --p12-password-file pw >/dev/null
cp pki.toml pki-base.toml

# serve_with RELAY [CONNECTIONS]: pki serve (restarted) with [mail.relay] the plain or the
# STARTTLS listener, or the plain one behind the delaying proxy (distant); connections as given.
serve_with() {
  if [ -n "$server" ]; then kill "$server"; wait "$server" 2>/dev/null || true; fi
  cp pki-base.toml pki.toml
  case $1 in
    plain) printf '[mail.relay]\nhost = "%s"\nport = %s\ntls = "none"\n' "${PKI_TEST_SMTP%:*}" "${PKI_TEST_SMTP##*:}" >>pki.toml ;;
    distant) printf '[mail.relay]\nhost = "127.0.0.1"\nport = %s\ntls = "none"\n' "$proxy_port" >>pki.toml ;;
    starttls)
      printf '[mail.relay]\nhost = "%s"\nport = %s\ntls = "starttls"\nusername = "%s"\npassword_file = "%s"\nca_file = "%s"\n' \
        "${PKI_TEST_SMTP_STARTTLS%:*}" "${PKI_TEST_SMTP_STARTTLS##*:}" "$PKI_TEST_SMTP_USER" \
        "$PKI_TEST_SMTP_PASSWORD_FILE" "$PKI_TEST_SMTP_CA" >>pki.toml ;;
  esac
  [ -z "${2:-}" ] || echo "connections = $2" >>pki.toml
  "$PKI" serve >serve.log 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
}

python3 - "$N" <<'EOF'
import base64, json, os, sys
n = int(sys.argv[1])
text = ("Dear customer, your statement for this month is attached. " * 36)[:2048]
pdf = b"%PDF-1.7\n" + os.urandom(100 * 1024 - 9)
one = {"to": "rsa@example.com", "sender": "statements", "subject": "Your statement", "text": text,
       "attachments": [{"filename": "statement.pdf", "content_type": "application/pdf",
                        "base64": base64.b64encode(pdf).decode()}]}
code = {"to": "rsa@example.com", "sender": "statements", "subject": "Your one-time code",
        "text": "Your one-time code is 493 817. It is valid for 10 minutes."}
for name, m in (("code", code), ("statement", one)):
    for deliver in (False, True):
        json.dump({"messages": [dict(m, deliver=deliver)] * n}, open(f"{name}-{int(deliver)}.json", "w"))
EOF

# One bulk request, timed; every message must be answered 200 (and delivered, when asked).
# Prints the rate and keeps one sealed message for the ceiling.
run() {
  local body=$1 label=$2 delivered=$3
  local start end
  start=$(date +%s.%N)
  curl -fsS -H "Authorization: Bearer $key" -H "Content-Type: application/json" \
    --data-binary @"$body" "http://127.0.0.1:$port/api/v1/mail/seal/bulk" >answer.json
  end=$(date +%s.%N)
  python3 - "$start" "$end" "$label" "$delivered" <<'EOF'
import base64, json, sys
start, end, label, delivered = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
results = json.load(open("answer.json"))["results"]
bad = [r for r in results if r.get("status") != 200]
if bad:
    sys.exit(f"{label}: {len(bad)} of {len(results)} messages not answered 200: {bad[0]}")
if delivered and not all(r.get("queue_id") for r in results):
    sys.exit(f"{label}: a message without the relay's queue id")
open("sealed.eml", "wb").write(base64.b64decode(results[0]["message_base64"]))
print(f"{label}: {len(results)} messages in {end - start:.2f} s, {len(results) / (end - start):,.0f} messages/s")
EOF
}

# smtplib_ceiling RELAY MODE: Python's smtplib hands N copies of sealed.eml to the relay, over
# one connection (MODE one) or a connection each (MODE each); with STARTTLS and the login when
# RELAY is starttls.
smtplib_ceiling() {
  python3 - "$N" "$1" "$2" <<'EOF'
import os, smtplib, ssl, sys, time
n, relay, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
addr = os.environ["PKI_TEST_SMTP_STARTTLS" if relay == "starttls" else "PKI_TEST_SMTP"]
host, port = addr.rsplit(":", 1)
context = ssl.create_default_context(cafile=os.environ["PKI_TEST_SMTP_CA"])
password = open(os.environ["PKI_TEST_SMTP_PASSWORD_FILE"]).readline().strip()
msg = open("sealed.eml", "rb").read()
def connect():
    s = smtplib.SMTP(host, int(port))
    if relay == "starttls":
        s.starttls(context=context)
        s.login(os.environ["PKI_TEST_SMTP_USER"], password)
    return s
start = time.time()
s = connect() if mode == "one" else None
for _ in range(n):
    c = s or connect()
    c.sendmail("statements@bank.example", ["rsa@example.com"], msg)
    if not s:
        c.quit()
if s:
    s.quit()
took = time.time() - start
print(f"smtplib, {'one connection' if mode == 'one' else 'a connection each'}: {n} messages of {len(msg):,} bytes in {took:.2f} s, {n / took:,.0f} messages/s")
EOF
}

# singles NAME: N single requests of NAME's message with delivery, from 4 keep-alive connections
# at once; every one must be answered 200 with the relay's queue id.
singles() {
  python3 - "$N" "$1-1.json" "$port" "$key" <<'EOF'
import http.client, json, sys, threading, time
n, body_file, port, key = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
body = json.dumps(json.load(open(body_file))["messages"][0]).encode()
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept": "application/json"}
bad = []
def client(count):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        c.request("POST", "/api/v1/mail/seal", body, headers)
        r = c.getresponse()
        answer = r.read()
        if r.status != 200 or not json.loads(answer).get("queue_id"):
            bad.append((r.status, answer[:200]))
threads = [threading.Thread(target=client, args=(n // 4,)) for _ in range(4)]
start = time.time()
for t in threads: t.start()
for t in threads: t.join()
took = time.time() - start
if bad:
    sys.exit(f"{len(bad)} single requests not delivered: {bad[0]}")
print(f"single requests, 4 connections: {n // 4 * 4} messages in {took:.2f} s, {n // 4 * 4 / took:,.0f} messages/s")
EOF
}

serve_with plain
for name in code statement; do
  echo "## $name: pki, one bulk request of $N messages without delivery (three times)"
  for _ in 1 2 3; do run "$name-0.json" "sealed, not delivered" 0; done
done
echo
for relay in plain starttls; do
  serve_with "$relay"
  for name in code statement; do
    echo "## $name, relay $relay: pki, one bulk request of $N messages with delivery (three times)"
    # A message of this kind, sealed, for the ceiling.
    run "$name-0.json" "(sealed once for smtplib)" 0 >/dev/null
    for _ in 1 2 3; do run "$name-1.json" "sealed and delivered" 1; done
    echo "## $name, relay $relay: pki, $N single requests with delivery (three times)"
    for _ in 1 2 3; do singles "$name"; done
    echo "## $name, relay $relay: the relay's ceiling, Python's smtplib with the same message"
    for mode in one each; do
      for _ in 1 2 3; do smtplib_ceiling "$relay" "$mode"; done
    done
    echo
  done
done

# A relay at a distance: the plain listener behind bench/delay-proxy.py, DELAY_MS (default 1) each
# way, a round trip of twice that; a bulk request over one connection and over four.
delay_ms=${DELAY_MS:-1}
proxy_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 "$repo/bench/delay-proxy.py" "$proxy_port" "$PKI_TEST_SMTP" "$delay_ms" &
proxy=$!
for conns in 1 4; do
  serve_with distant "$conns"
  for name in code statement; do
    echo "## $name, relay at $delay_ms ms each way, connections = $conns: pki, one bulk request of $N messages with delivery (three times)"
    for _ in 1 2 3; do run "$name-1.json" "sealed and delivered" 1; done
  done
done
