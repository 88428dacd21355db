-- POST the body in BODY_FILE (or, for several paths joined by ":", each in turn, request by
-- request) and print one JSON line of results at the end: the totals, and every latency wrk
-- recorded with its count (microseconds), so that the latencies of several runs can be added
-- up before their percentiles are taken (benchmarks/load.py).
local bodies = {}
for path in string.gmatch(os.getenv("BODY_FILE"), "[^:]+") do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
wrk.method = "POST"
wrk.body = bodies[1]
wrk.headers["Content-Type"] = os.getenv("BODY_TYPE")
if #bodies > 1 then
  local last = 0
  request = function()
    last = last % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[last])
  end
end

done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors
  local histogram = {}
  for i = 1, #latency do
    local value, count = latency(i)
    histogram[#histogram + 1] = string.format("[%d,%d]", value, count)
  end
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p95_ms": %.3f, ' ..
    '"p99_ms": %.3f, "non_2xx": %d, "socket_errors": %d, "latency_us": [%s]}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout,
    table.concat(histogram, ",")))
end
