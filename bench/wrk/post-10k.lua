-- wrk script: POST a 10 KiB body (the echo app sends it back), then the same
-- report line as report.lua.
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 640)   -- 10240 bytes
wrk.headers["Content-Type"] = "application/octet-stream"

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"lat_mean":%.2f,"lat_p50":%d,"lat_p90":%d,"lat_p99":%d,"lat_max":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
