#!/usr/bin/env bash
# Makes the previous-release fixture: a data directory written by a `pki` binary of an earlier
# release (pki-data/), and the answers that release gave about it (expected/), which
# tests/previous_release.rs asks of the binary under test.
#
#   bash crates/pki-tests/tests/data/previous-release/make.sh /path/to/pki-of-that-release
#
# Needs openssl (3.x), curl and base32 (coreutils). Refuses to run when pki-data/ exists: the
# fixture is made once, by the old binary, and then only read (the test works on a copy).
#
# What the data directory holds: `pki init` (key store under passphrase.txt, never the
# development master-key file); alice@example.com with a signing and an encryption certificate
# from OpenSSL-made P-256 CSRs; bob@example.com with an encryption certificate whose RSA key was
# generated and escrowed (`--generate --p12`); carol@example.com's signing certificate revoked
# for keyCompromise (and a refused request for the same key afterwards); one timestamp token
# (ts/); one API key (apikey.txt) and the quota of lookups without a key raised; one console
# officer, olivia, who has chosen a password and enrolled TOTP (console-password.txt,
# console-totp-secret.txt), and logged in once more.
#
# What is recorded, and what is normalised because it changes on every run:
# - `openssl ocsp` answers: the status line, Reason and Revocation Time, and "Response verify
#   OK"; thisUpdate/nextUpdate are the time of the request and are dropped;
# - the CRL: its revoked entries (serial, revocation date, reason) as `openssl crl -text`
#   prints them; thisUpdate, nextUpdate, the CRL number and the signature change whenever the
#   CRL is re-signed (every 84 hours by default) and are dropped;
# - directory answers over HTTP: the status code and the body (no header carries data here);
# - console logins: the status and Location of each step (session cookies are random);
# - `pki escrow recover`: its output line; the PKCS#12 itself has a random salt and IV, so the
#   public key of the recovered private key is recorded instead (escrow-pubkey.pem);
# - every other answer (`pki list`, `pki show`, `pki lookup`, `pki audit verify`,
#   `pki ts verify`, `pki apikey list`, `pki user list`, `pki ca-cert`, `pki init` again) is
#   recorded as printed: nothing in it depends on the time it is asked, except a status that
#   turns `expired` at a certificate's notAfter (see README.md).
set -euo pipefail

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 /path/to/pki (the previous release's binary)" >&2
    exit 2
fi
PKI=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$HERE/pki-data
EXP=$HERE/expected
if [ -e "$DATA" ]; then
    echo "error: $DATA exists; the fixture is made once (remove pki-data/ and expected/ to remake it)" >&2
    exit 1
fi
for tool in openssl curl base32; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install -y openssl curl coreutils)" >&2; exit 1; }
done
rm -rf "$EXP" "$HERE/ts"
mkdir -p "$EXP/show" "$EXP/ocsp" "$EXP/directory" "$EXP/lookup" "$HERE/ts"

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=${PORT:-$((20000 + RANDOM % 20000))}
BASE=http://127.0.0.1:$PORT
CONFIG=$WORK/pki.toml
{
    printf '[server]\nlisten = "127.0.0.1:%s"\n\n' "$PORT"
    cat "$HERE/pki.toml"
    printf '\n[hsm]\npassphrase_file = "%s"\n' "$HERE/passphrase.txt"
} >"$CONFIG"

pki() {
    env -u PKI_DATA -u PKI_CONFIG -u PKI_HSM_PASSPHRASE -u PKI_API_KEY -u RUST_LOG \
        "$PKI" --config "$CONFIG" --data "$DATA" "$@"
}
# Relative output paths (recovered.p12) are printed back: run everything from one directory.
cd "$WORK"

# --- The CA and its certificates -----------------------------------------------------------
pki init >init.txt

p256_csr() { # NAME ADDRESS: NAME.key and NAME.csr
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
}
p256_csr alice-signing alice@example.com
p256_csr alice-encryption alice@example.com
p256_csr carol-signing carol@example.com
pki issue --email alice@example.com --usage signing --csr alice-signing.csr >alice-signing.pem
pki issue --email alice@example.com --usage encryption --csr alice-encryption.csr >alice-encryption.pem
pki issue --email bob@example.com --usage encryption --generate \
    --p12 bob-encryption.p12 --p12-password-file "$HERE/p12-password.txt" >bob-encryption.pem
pki issue --email carol@example.com --usage signing --csr carol-signing.csr >carol-signing.pem

serial_of() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//; s/^\(00\)*//'; }
CAROL=$(serial_of carol-signing.pem)
BOB=$(serial_of bob-encryption.pem)
pki revoke --serial "$CAROL" --reason keyCompromise >"$EXP/revoke.txt"
# The same key again: refused, and the refusal is audited. The CSR is kept for the test.
cp carol-signing.csr "$HERE/carol-compromised.csr"
if pki issue --email carol@example.com --usage signing --csr carol-signing.csr >/dev/null 2>"$EXP/issue-compromised.txt"; then
    echo "error: the previous release issued a certificate for a compromised key" >&2
    exit 1
fi

# --- A timestamp, an API key, a console user -------------------------------------------------
printf 'Minutes of the board meeting, fixture edition.\n' >"$HERE/ts/document.txt"
pki ts stamp "$HERE/ts/document.txt" --out "$HERE/ts/document.tsr" >/dev/null
pki apikey create --name mail-gateway --rate 50 >"$HERE/apikey.txt" 2>/dev/null
# Room for the lookups below without a key (the default quota is per IP address).
pki cerdb anonymous --rate 200 --burst 200 >/dev/null
pki user add --name olivia --role officer >user-add.txt
OTP=$(sed -n 's/^one-time password: //p' user-add.txt)
printf 'Fixture-Console-Password-1\n' >"$HERE/console-password.txt"
PASSWORD=$(head -n1 "$HERE/console-password.txt")

# --- Through the server: console enrolment, OCSP, the directory over HTTP --------------------
pki serve --listen "127.0.0.1:$PORT" >serve.out 2>serve.err &
SERVER_PID=$!
for _ in $(seq 1 300); do
    curl -sf "$BASE/healthz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat serve.err >&2; exit 1; }
    sleep 0.1
done
curl -sf "$BASE/healthz" >/dev/null

JAR=$WORK/cookies
csrf() { curl -sS -b "$JAR" -c "$JAR" "$BASE$1" | sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' | head -n1; }
post() { # PATH FIELD... -> "STATUS LOCATION"
    local path=$1
    shift
    local args=()
    for f in "$@"; do args+=(--data-urlencode "$f"); done
    curl -sS -b "$JAR" -c "$JAR" -o /dev/null -w '%{http_code} %header{location}\n' "${args[@]}" "$BASE$path"
}
totp() { # BASE32-SECRET STEP -> six digits (RFC 6238: HMAC-SHA-1, 30 s steps)
    local b32 hexkey msg mac off bin
    b32=$(printf '%s' "$1" | tr -d ' =')
    while [ $((${#b32} % 8)) -ne 0 ]; do b32="$b32="; done
    hexkey=$(printf '%s' "$b32" | base32 -d | od -An -tx1 | tr -d ' \n')
    msg=$(printf '%016x' "$2" | sed 's/../\\x&/g')
    # shellcheck disable=SC2059 # the format is the message, as \xNN escapes
    mac=$(printf "$msg" | openssl mac -digest SHA1 -macopt "hexkey:$hexkey" HMAC)
    off=$((16#${mac:39:1}))
    bin=$((16#${mac:$((off * 2)):8} & 0x7fffffff))
    printf '%06d' $((bin % 1000000))
}
step_now() { echo $(($(date +%s) / 30)); }
wait_next_step() { local s; s=$(step_now); while [ "$(step_now)" -le "$s" ]; do sleep 1; done; }

T=$(csrf /admin/login)
[ "$(post /admin/login "csrf_token=$T" username=olivia "password=$OTP")" = "303 /admin/password" ]
T=$(csrf /admin/password)
[ "$(post /admin/password "csrf_token=$T" "new_password=$PASSWORD" "confirm_password=$PASSWORD")" = "303 /admin/totp/enrol" ]
curl -sS -b "$JAR" -c "$JAR" "$BASE/admin/totp/enrol" >enrol.html
SECRET=$(sed -n 's/.*id="totp-secret"[^>]*>\([^<]*\)<.*/\1/p' enrol.html | head -n1 | tr -d ' ')
[ -n "$SECRET" ] || { echo "error: no TOTP secret on the enrolment page" >&2; exit 1; }
printf '%s\n' "$SECRET" >"$HERE/console-totp-secret.txt"
T=$(sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' enrol.html | head -n1)
[ "$(post /admin/totp/enrol "csrf_token=$T" "code=$(totp "$SECRET" "$(step_now)")")" = "303 /admin/" ]
# A full login, as the test does it (a fresh session, the next TOTP step: codes are single-use).
wait_next_step
rm -f "$JAR"
{
    T=$(csrf /admin/login)
    echo "password step: $(post /admin/login "csrf_token=$T" username=olivia "password=$PASSWORD")"
    T=$(csrf /admin/login/totp)
    echo "totp step: $(post /admin/login/totp "csrf_token=$T" "code=$(totp "$SECRET" "$(step_now)")")"
    echo "home page: $(curl -sS -b "$JAR" -o /dev/null -w '%{http_code}' "$BASE/admin/")"
} >"$EXP/console-login.txt"

pki ca-cert root >root.pem
pki ca-cert issuing >issuing.pem
pki list >list-now.txt
LEAVES=$(awk 'NR > 1 && ($2 == "signing" || $2 == "encryption") {print $1}' list-now.txt)
for s in $LEAVES; do
    # stdout, then stderr ("Response verify OK")
    out=$(openssl ocsp -issuer issuing.pem -CAfile root.pem -url "$BASE/ocsp" -serial "0x$s" 2>ocsp.err; cat ocsp.err)
    printf '%s\n' "$out" | grep -E "^0x$s: |^[[:space:]]*(Reason|Revocation Time):|^Response verify" \
        >"$EXP/ocsp/$s.txt"
done

http_record() { # NAME PATH [CURL-ARGS...]: status line and body
    local name=$1 path=$2
    shift 2
    curl -sS -o body -w '%{http_code}' "$@" "$BASE$path" >code
    { echo "HTTP $(cat code)"; cat body; echo; } >"$EXP/directory/$name.txt"
}
ALICE_SHA=$(printf 'alice@example.com' | openssl dgst -sha256 -r | cut -d' ' -f1)
for who in alice bob carol dave; do
    for usage in signing encryption; do
        http_record "exists-$who-$usage" "/api/v1/certificates/exists?email=$who@example.com&usage=$usage"
        http_record "fetch-$who-$usage" "/api/v1/certificates?email=$who@example.com&usage=$usage" \
            -H 'Accept: application/json'
    done
done
http_record exists-sha256-alice-encryption "/api/v1/certificates/exists?email_sha256=$ALICE_SHA&usage=encryption"
http_record fetch-sha256-alice-encryption "/api/v1/certificates?email_sha256=$ALICE_SHA&usage=encryption" \
    -H 'Accept: application/json'
for s in $LEAVES; do
    http_record "by-serial-$s" "/api/v1/certificates/by-serial/$s" -H 'Accept: application/json'
done
KEY=$(head -n1 "$HERE/apikey.txt")
BULK='{"emails":["alice@example.com","bob@example.com","carol@example.com","dave@example.com"],"usage":"encryption"}'
http_record bulk-with-api-key /api/v1/certificates/lookup -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' --data-binary "$BULK"
# A well-formed key that was never issued: its last character changed.
if [ "${KEY: -1}" = A ]; then WRONG=${KEY%?}B; else WRONG=${KEY%?}A; fi
http_record bulk-with-wrong-key /api/v1/certificates/lookup -H "Authorization: Bearer $WRONG" \
    -H 'Content-Type: application/json' --data-binary "$BULK"
pki lookup --server "$BASE" --api-key "$KEY" --email alice@example.com --usage encryption \
    >"$EXP/lookup/server-alice-encryption.txt"

kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=

# --- Escrow ----------------------------------------------------------------------------------
pki escrow recover --serial "$BOB" --p12 recovered.p12 --p12-password-file "$HERE/p12-password.txt" \
    >"$EXP/escrow-recover.txt"
pubkey_of_p12() {
    openssl pkcs12 -in "$1" -nocerts -nodes -passin "file:$HERE/p12-password.txt" 2>/dev/null | openssl pkey -pubout
}
pubkey_of_p12 bob-encryption.p12 >"$EXP/escrow-pubkey.pem"
pubkey_of_p12 recovered.p12 | cmp - "$EXP/escrow-pubkey.pem"
openssl x509 -in bob-encryption.pem -noout -pubkey | cmp - "$EXP/escrow-pubkey.pem"

# --- The answers read from the data directory (no server running) ---------------------------
pki list >"$EXP/list.txt"
for s in $(awk 'NR > 1 {print $1}' "$EXP/list.txt"); do
    pki show --serial "$s" >"$EXP/show/$s.txt"
done
for who in alice bob carol dave; do
    for usage in signing encryption; do
        pki lookup --email "$who@example.com" --usage "$usage" >"$EXP/lookup/$who-$usage.txt"
    done
done
pki apikey list >"$EXP/apikey-list.txt"
pki user list >"$EXP/user-list.txt"
pki cerdb anonymous >"$EXP/anonymous.txt"
pki ts verify --token "$HERE/ts/document.tsr" --data "$HERE/ts/document.txt" >"$EXP/ts-verify.txt"
for which in root issuing ocsp tsa; do pki ca-cert "$which" >"$EXP/ca-$which.pem"; done
pki init >"$EXP/init-again.txt"
pki crl >crl.pem
openssl crl -in crl.pem -noout -text |
    awk '/^Revoked Certificates:/ {f = 1; next} /^[[:space:]]*Signature Algorithm:/ {f = 0} f {sub(/^[[:space:]]+/, ""); print}' \
        >"$EXP/crl-revoked.txt"
# Last: every command above that writes to the audit log has run.
pki audit verify >"$EXP/audit-verify.txt"

rm -f "$DATA/admin.sock"
echo "made $DATA ($(du -sh "$DATA" | cut -f1)) with $("$PKI" --version)"
