-- wrk script: POST one fixed sealing request, read from $SEAL_BODY, to $SEAL_PATH
-- (/api/v1/mail/seal or /api/v1/mail/seal/bulk) with the API key $SEAL_KEY. Every answer is
-- checked: HTTP 200, and $SEAL_EXPECT messages answered 200 inside it (a bulk answer's
-- `"status":200` counted in its bytes; a single answer is the raw message, which must hold an
-- enveloped S/MIME part). An answer that fails the check is counted in `bad=`.

bad = 0 -- global: read by done() through thread:get
local expect = 1
local bulk = false

function init(args)
  local path = assert(os.getenv("SEAL_BODY"), "SEAL_BODY not set")
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  assert(#wrk.body > 0, "empty request")
  wrk.method = "POST"
  wrk.path = assert(os.getenv("SEAL_PATH"), "SEAL_PATH not set")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("SEAL_KEY"), "SEAL_KEY not set")
  expect = tonumber(os.getenv("SEAL_EXPECT") or "1")
  bulk = wrk.path:find("/bulk", 1, true) ~= nil
end

local function count(body, needle)
  local n, i = 0, 1
  while true do
    local s, e = body:find(needle, i, true)
    if not s then
      return n
    end
    n, i = n + 1, e + 1
  end
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  elseif bulk then
    if count(body, '"status":200') ~= expect then
      bad = bad + 1
    end
  elseif not body:find("smime-type=enveloped-data", 1, true) then
    bad = bad + 1
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- One machine-readable line for seal.sh.
function done(summary, latency, requests)
  local failed = 0
  for _, t in ipairs(threads) do
    failed = failed + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d bad=%d connect_err=%d read_err=%d write_err=%d status_err=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, failed, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
