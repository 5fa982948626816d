-- wrk script: POST /ocsp with a DER OCSPRequest (RFC 6960 §4.1.1) for a random serial among those
-- in $OCSP_SERIALS (hex DER INTEGER content octets, one per line); one CertID hashed with SHA-1
-- (the RFC 5019 profile), issuer hashes in $OCSP_NAME_HASH / $OCSP_KEY_HASH (hex).
-- $OCSP_NONCE=1 adds a fresh random 16-octet nonce (RFC 8954) to every request, so that no
-- response can come from a cache. $OCSP_PATH is the request path (default /ocsp).

local function unhex(h)
  return (h:gsub("..", function(c) return string.char(tonumber(c, 16)) end))
end

local function tlv(tag, content)
  local n = #content
  local len
  if n < 0x80 then
    len = string.char(n)
  elseif n < 0x100 then
    len = string.char(0x81, n)
  else
    len = string.char(0x82, math.floor(n / 256), n % 256)
  end
  return string.char(tag) .. len .. content
end

local SEQ, OCTETS, INTEGER, CTX2 = 0x30, 0x04, 0x02, 0xa2
local SHA1 = tlv(SEQ, unhex("06052b0e03021a") .. unhex("0500"))
local NONCE_OID = unhex("06092b0601050507300102")

-- wrk's default resolve() opens and closes a probe connection first. OpenSSL 3.0's `openssl ocsp`
-- responder serves one connection at a time and spins forever reading the EOF of that probe, so
-- it would never answer: resolve without probing.
function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup(host, service)
end

local thread_id = 0
function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

local bodies = {} -- per serial: the whole request, or (with a nonce) all of it but the nonce octets
local nonce = os.getenv("OCSP_NONCE") == "1"
local path = os.getenv("OCSP_PATH") or "/ocsp"
local NONCE_LEN = 16

-- Everything of an OCSPRequest up to the nonce octets, which end it; `nonce_len` fixes the lengths.
local function request_prefix(id, nonce_len)
  local placeholder = string.rep("\0", nonce_len)
  local ext = tlv(SEQ, NONCE_OID .. tlv(OCTETS, tlv(OCTETS, placeholder)))
  local whole = tlv(SEQ, tlv(SEQ, tlv(SEQ, tlv(SEQ, id)) .. tlv(CTX2, tlv(SEQ, ext))))
  return whole:sub(1, #whole - nonce_len)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919 + math.floor(os.clock() * 1e6))
  local name_hash = unhex(assert(os.getenv("OCSP_NAME_HASH"), "OCSP_NAME_HASH not set"))
  local key_hash = unhex(assert(os.getenv("OCSP_KEY_HASH"), "OCSP_KEY_HASH not set"))
  local file = assert(io.open(assert(os.getenv("OCSP_SERIALS"), "OCSP_SERIALS not set"), "r"))
  for line in file:lines() do
    if #line > 0 then
      local id = tlv(SEQ, SHA1 .. tlv(OCTETS, name_hash) .. tlv(OCTETS, key_hash) .. tlv(INTEGER, unhex(line)))
      if nonce then
        bodies[#bodies + 1] = request_prefix(id, NONCE_LEN)
      else
        bodies[#bodies + 1] = tlv(SEQ, tlv(SEQ, tlv(SEQ, tlv(SEQ, id))))
      end
    end
  end
  file:close()
  assert(#bodies > 0, "no serials")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/ocsp-request"
end

local random, char = math.random, string.char
local dump = os.getenv("OCSP_DUMP")

function request()
  local body = bodies[random(#bodies)]
  if nonce then
    -- 16 fresh random octets: four 32-bit draws.
    local a, b, c, d = random(0, 0xffffffff), random(0, 0xffffffff), random(0, 0xffffffff), random(0, 0xffffffff)
    body = body .. char(
      a % 256, math.floor(a / 256) % 256, math.floor(a / 65536) % 256, math.floor(a / 16777216),
      b % 256, math.floor(b / 256) % 256, math.floor(b / 65536) % 256, math.floor(b / 16777216),
      c % 256, math.floor(c / 256) % 256, math.floor(c / 65536) % 256, math.floor(c / 16777216),
      d % 256, math.floor(d / 256) % 256, math.floor(d / 65536) % 256, math.floor(d / 16777216))
  end
  if dump then
    -- $OCSP_DUMP: write the first request body to that file (run.sh checks it with openssl).
    local f = assert(io.open(dump, "wb"))
    f:write(body)
    f:close()
    dump = nil
  end
  return wrk.format(nil, path, nil, body)
end

-- One machine-readable line for run.sh.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d bytes=%d connect_err=%d read_err=%d write_err=%d status_err=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
