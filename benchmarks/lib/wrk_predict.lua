-- wrk script of benchmarks/serve.py: POST /predict with the bodies of a file (one JSON body per line),
-- cycled in order, one request per connection at a time (wrk's closed loop). At the end it prints one
-- line "WRK_JSON {...}" with the counts and latency percentiles (microseconds) for the benchmark.
--   wrk -t1 -cC -dDs --latency -s wrk_predict.lua http://127.0.0.1:PORT -- BODIES_FILE
local requests, n, i = {}, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    requests[n] = wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, line)
  end
end

function request()
  i = i % n + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  local q = {}
  for _, p in ipairs({50, 90, 95, 99, 99.9}) do
    q[#q + 1] = string.format('"p%s": %d', p, latency:percentile(p))
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "max": %d, %s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, table.concat(q, ", ")))
end
