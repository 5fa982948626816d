#!/usr/bin/env bash
# Sealed mail handed to a relay: a bulk request of N messages to an RSA-2048 recipient, no
# timestamp, with "deliver": true through a private Postfix on loopback (scripts/with-mail.sh),
# beside the same bulk request without delivery (the sealing alone) and beside the raw ceiling of
# the relay: Python's smtplib handing N messages of the same size to the same Postfix, one
# connection each, as pki does. Two messages: a one-time code (a line of text, about 6 KB
# sealed) and the statement of bench/seal.sh (2 KB of text and a 100 KB PDF, about 200 KB).
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

# shellcheck source=sealed-mail-setup.sh
source bench/sealed-mail-setup.sh
bench_start deliver
cat >>pki.toml <<EOF
[mail.relay]
host = "${PKI_TEST_SMTP%:*}"
port = ${PKI_TEST_SMTP##*:}
tls = "none"
EOF
echo "command: bash bench/deliver.sh $N"
echo
bench_sender
echo "bench-password-2026" >pw
"$PKI" issue --email rsa@example.com --usage encryption --generate --key-type rsa2048 --p12 rsa.p12 --p12-password-file pw >/dev/null
"$PKI" serve >serve.log 2>&1 &
server=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

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

for name in code statement; do
echo "## $name: pki, one bulk request of $N messages (three times each)"
for _ in 1 2 3; do run "$name-0.json" "sealed, not delivered" 0; done
for _ in 1 2 3; do run "$name-1.json" "sealed and delivered " 1; done
echo "## $name: the relay's ceiling, Python's smtplib handing $N messages of the same size to the same Postfix, a connection each"
for _ in 1 2 3; do
  python3 - "$N" "$PKI_TEST_SMTP" <<'EOF'
import smtplib, sys, time
n, (host, port) = int(sys.argv[1]), sys.argv[2].rsplit(":", 1)
msg = open("sealed.eml", "rb").read()
start = time.time()
for _ in range(n):
    s = smtplib.SMTP(host, int(port))
    s.sendmail("statements@bank.example", ["rsa@example.com"], msg)
    s.quit()
took = time.time() - start
print(f"smtplib: {n} messages of {len(msg):,} bytes in {took:.2f} s, {n / took:,.0f} messages/s")
EOF
done
echo
done
