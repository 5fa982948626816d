-- wrk script: POST /tsa with one fixed DER TimeStampReq read from $TSA_QUERY (made by
-- `openssl ts -query -sha256 -cert`). Every request gets a fresh token with its own serial,
-- signed and recorded durably before it is returned.

function init(args)
  local path = assert(os.getenv("TSA_QUERY"), "TSA_QUERY not set")
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  assert(#wrk.body > 0, "empty query")
  wrk.method = "POST"
  wrk.path = os.getenv("TSA_PATH") or "/tsa"
  wrk.headers["Content-Type"] = "application/timestamp-query"
end

-- One machine-readable line for run.sh.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d bytes=%d connect_err=%d read_err=%d write_err=%d status_err=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
