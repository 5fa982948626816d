-- wrk script for the certificate directory: GET exists or fetch for random known addresses.
--   DIR_COUNT   how many load-test addresses exist (load-0 .. load-(N-1) @loadtest.example)
--   DIR_KEY     API key (Authorization: Bearer), so the per-IP anonymous quota does not apply
--   DIR_OP      exists (default) or fetch
--   DIR_VERIFY  1: also count answers that are not 200 / not "exists": true (slower: wrk then
--               hands every response to Lua)
local n = tonumber(os.getenv("DIR_COUNT") or "1000")
local key = os.getenv("DIR_KEY") or ""
local op = os.getenv("DIR_OP") or "exists"
local verify = os.getenv("DIR_VERIFY") == "1"
local base = op == "fetch" and "/api/v1/certificates?email=load-" or "/api/v1/certificates/exists?email=load-"
local headers = { ["Authorization"] = "Bearer " .. key }

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  bad = 0
  wrong = 0
end

function request()
  return wrk.format("GET", base .. math.random(0, n - 1) .. "@loadtest.example", headers)
end

if verify then
  function response(status, hdrs, body)
    if status ~= 200 then
      bad = bad + 1
    elseif op == "exists" and not string.find(body, '"exists":true', 1, true) then
      wrong = wrong + 1
    elseif op == "fetch" and not string.find(body, "BEGIN CERTIFICATE", 1, true) then
      wrong = wrong + 1
    end
  end
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format("RESULT op=%s requests=%d seconds=%.1f rps=%.0f p50_ms=%.2f p99_ms=%.2f socket_errors=%d",
    op, summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  if verify then
    local b, w = 0, 0
    for _, t in ipairs(threads) do
      b = b + t:get("bad")
      w = w + t:get("wrong")
    end
    io.write(string.format(" non_200=%d wrong_answer=%d", b, w))
  end
  io.write("\n")
end
