#!/usr/bin/env bash
# Sealed messages per second (POST /api/v1/mail/seal and /seal/bulk of a release `pki serve`)
# beside OpenSSL's command-line pipeline `openssl smime -sign | openssl smime -encrypt` (`openssl
# cms -encrypt` for P-256 recipients: `smime` has no key agreement) on the same messages, in the
# same run: a 2 KB statement with a 100 KB PDF, to an RSA-2048 and to a P-256 recipient, with and
# without a timestamp.
#
# Usage: bash bench/seal.sh [MESSAGES]      (default 400 per case; OpenSSL gets MESSAGES/8)
# Honours CARGO_TARGET_DIR; PKI_BIN=/path/to/pki measures that binary instead of building one.
# Needs openssl, curl and python3. PKI_BENCH_PROFILE=dev measures the
# dev build instead of the release build (dependencies at opt-level 2, the workspace unoptimised):
# for a quick look only, and say so beside its numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-400}
NO=$(( N / 8 > 10 ? N / 8 : 10 ))
TARGET=${CARGO_TARGET_DIR:-target}
if [ -n "${PKI_BIN:-}" ]; then
  PKI=$PKI_BIN
elif [ "${PKI_BENCH_PROFILE:-release}" = dev ]; then
  cargo build -q --bin pki
  PKI="$TARGET/debug/pki"
else
  cargo build -q --release --bin pki
  PKI="$TARGET/release/pki"
fi
[ "${PKI#/}" != "$PKI" ] || PKI="$PWD/$PKI"

work=$(mktemp -d "${TMPDIR:-/tmp}/pki-bench-seal.XXXXXX")
server=""
cleanup() {
  [ -z "$server" ] || { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >pki.toml <<EOF
[server]
listen = "127.0.0.1:$port"
[ca]
public_base_url = "http://127.0.0.1:$port"
[validation]
enterprise_domains = ["bank.example", "example.com"]
EOF
export PKI_CONFIG=$work/pki.toml PKI_DATA=$work/data
echo "## machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), cores: $(nproc), memory: $(free -g | awk '/Mem:/{print $2}') GiB"
echo "openssl: $(openssl version)"
echo "command: bash bench/seal.sh $N (profile ${PKI_BENCH_PROFILE:-release})"
echo
"$PKI" init >/dev/null
"$PKI" mail sender add --name statements --email statements@bank.example >/dev/null
key=$("$PKI" apikey create --name bench --permission mail --rate 1000000000 2>/dev/null)
"$PKI" mail sender allow --name statements --key bench >/dev/null
"$PKI" ca-cert root >root.pem
"$PKI" ca-cert issuing >issuing.pem
echo "bench-password-2026" >pw
"$PKI" issue --email rsa@example.com --usage encryption --generate --key-type rsa2048 --p12 rsa.p12 --p12-password-file pw >rsa.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.key 2>/dev/null
openssl req -new -key p256.key -subj /CN=p256@example.com -out p256.csr
"$PKI" issue --email p256@example.com --usage encryption --csr p256.csr >p256.pem
# OpenSSL's pipeline signs with a key it can read: a signing certificate from the same CA.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out signer.key 2>/dev/null
openssl req -new -key signer.key -subj /CN=bench@bank.example -out signer.csr
"$PKI" issue --email bench@bank.example --usage signing --csr signer.csr >signer.pem

"$PKI" serve >serve.log 2>&1 &
server=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

# The statement: 2 KB of text and a 100 KB PDF; one MIME entity for OpenSSL, JSON for pki.
python3 - <<'EOF'
import base64, json, os
text = ("Dear customer, your statement for this month is attached. " * 36)[:2048]
pdf = b"%PDF-1.7\n" + os.urandom(100 * 1024 - 9)
open("statement.pdf", "wb").write(pdf)
b = "=_bench"
pdf_b64 = base64.encodebytes(pdf).decode().replace("\n", "\r\n")
text_b64 = base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")
entity = (f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n--{b}\r\n'
          f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{text_b64}"
          f'--{b}\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="statement.pdf"\r\n'
          f"Content-Transfer-Encoding: base64\r\n\r\n{pdf_b64}--{b}--\r\n")
open("entity.eml", "w", newline="").write(entity)
for to in ("rsa", "p256"):
    for ts in (False, True):
        req = {"to": f"{to}@example.com", "sender": "statements", "subject": "Your statement", "text": text,
               "attachments": [{"filename": "statement.pdf", "content_type": "application/pdf",
                                "base64": base64.b64encode(pdf).decode()}], "timestamp": ts}
        open(f"req-{to}-{int(ts)}.json", "w").write(json.dumps(req))
EOF

# pki: single requests from 4 keep-alive clients, and bulk requests of 100 messages.
driver() {
  python3 - "$port" "$key" "$@" <<'EOF'
import http.client, json, sys, threading, time
port, key, mode, req_file, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
one = open(req_file, "rb").read()
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
def post(conn, path, body):
    conn.request("POST", path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    assert r.status == 200, (r.status, data[:200])
    return data
if mode == "single":
    clients, per = 4, n // 4
    finished, failures = [], []
    def work():
        c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=300)
        try:
            for _ in range(per):
                post(c, "/api/v1/mail/seal", one)
                finished.append(1)
        except Exception as e:
            failures.append(repr(e)[:200])
    threads = [threading.Thread(target=work) for _ in range(clients)]
    t = time.time()
    [th.start() for th in threads]
    [th.join() for th in threads]
    done = len(finished)
    if failures:
        print(f"FAILED after {done} messages: {failures[0]}")
        sys.exit(1)
else:
    batch = 100
    body = ('{"messages": [' + ",".join([one.decode()] * batch) + "]}").encode()
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=600)
    res = json.loads(post(c, "/api/v1/mail/seal/bulk", body))["results"]
    assert len(res) == batch and all(x["status"] == 200 and x["message_base64"] for x in res), res[:1]
    t = time.time()
    done = 0
    while done < n:
        data = post(c, "/api/v1/mail/seal/bulk", body)
        # Every answer says 200 (counted in the bytes: parsing 37 MB of JSON in Python would
        # cost this client more than the server's work; base64 never holds a quote). The first
        # answer is parsed in full before the clock starts, below.
        statuses, ok = data.count(b'"status":'), data.count(b'"status":200')
        assert statuses == batch and ok == batch, (statuses, ok, data[:200])
        done += batch
elapsed = time.time() - t
print(f"{done / elapsed:9.1f} messages/s  ({done} in {elapsed:.2f} s)")
EOF
}

# OpenSSL: one `smime -sign | smime -encrypt` (or `cms -encrypt`) pipeline per message.
openssl_pipeline() {
  local recip=$1 n=$2 t0 t1 enc=(smime -encrypt -aes256 "$1.pem")
  [ "$recip" = rsa ] || enc=(cms -encrypt -aes256 -recip "$1.pem")
  t0=$(date +%s.%N)
  for _ in $(seq "$n"); do
    openssl smime -sign -signer signer.pem -inkey signer.key -certfile issuing.pem -nodetach -in entity.eml \
      | openssl "${enc[@]}" >/dev/null
  done
  t1=$(date +%s.%N)
  python3 -c "import sys; n, a, b = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'{n / (b - a):9.1f} messages/s  ({n} in {b - a:.2f} s)')" "$n" "$t0" "$t1"
}

echo "## sealed messages per second (2 KB text + 100 KB PDF)"
for to in rsa p256; do
  for ts in 0 1; do
    label="$to, timestamp $([ "$ts" = 1 ] && echo yes || echo no)"
    echo "pki single ($label): $(driver single "req-$to-$ts.json" "$N")"
    echo "pki bulk   ($label): $(driver bulk "req-$to-$ts.json" "$N")"
  done
  echo "openssl smime -sign | $([ "$to" = rsa ] && echo smime || echo cms) -encrypt ($to, no timestamp): $(openssl_pipeline "$to" "$NO")"
done
