-- One machine-readable line at the end of a run: counts, errors and latency percentiles (µs).
-- Loaded by the other scripts; the harness parses the line that starts with BENCHJSON.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %.0f, "connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d, "p50": %.0f, "p90": %.0f, "p99": %.0f, ' ..
      '"p999": %.0f, "max": %.0f, "mean": %.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
