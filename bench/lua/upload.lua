-- Uploads: POST the file BENCH_BODY_FILE (1 MiB) with Authorization: Bearer BENCH_TOKEN.
-- Bearer, not a cookie: CSRF protection applies to cookie-authenticated POSTs, not to API clients.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "summary.lua")
local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE is not set"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN is not set")
