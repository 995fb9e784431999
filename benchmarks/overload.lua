-- wrk script for bench_overload.py and bench_service.py --wrk: POST one file, count
-- answers by status. Usage: wrk ... -s benchmarks/overload.lua URL -- FILE CONTENT-TYPE
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = io.open(args[1], "rb")
   wrk.method = "POST"
   wrk.body = file:read("*all")
   file:close()
   wrk.headers["Content-Type"] = args[2] or "image/png"
   ok, refused, other = 0, 0, 0
end

function response(status, headers, body)
   if status == 200 then
      ok = ok + 1
   elseif status == 503 then
      refused = refused + 1
   else
      other = other + 1
   end
end

function done(summary, latency, requests)
   local o, r, x = 0, 0, 0
   for _, thread in ipairs(threads) do
      o = o + thread:get("ok")
      r = r + thread:get("refused")
      x = x + thread:get("other")
   end
   local e = summary.errors
   io.write(string.format(
      "QUSEC ok=%d refused=%d other=%d socket_errors=%d seconds=%f p50_us=%d p99_us=%d\n",
      o, r, x, e.connect + e.read + e.write + e.timeout, summary.duration / 1e6,
      latency:percentile(50), latency:percentile(99)))
end
