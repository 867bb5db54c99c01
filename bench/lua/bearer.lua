-- An API client: the same Authorization: Bearer token on every request (validation cache warm).
-- BENCH_TOKEN: the access token.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "summary.lua")
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN is not set")
