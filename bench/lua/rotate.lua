-- Many sessions in rotation: request i carries line i of BENCH_LINES as its Cookie header
-- (10,000 users' tokens: validation cache cold; or expired sessions with live refresh tokens).
-- Each run starts at line BENCH_OFFSET (the harness moves it on after every run, so consecutive runs
-- continue the rotation instead of repeating its start); each wrk thread at its own offset.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "summary.lua")
local values = {}
local path = assert(os.getenv("BENCH_LINES"), "BENCH_LINES is not set")
for line in io.lines(path) do
   values[#values + 1] = line
end
local n = #values
local threads = 0

function setup(thread)
   thread:set("thread_id", threads)
   threads = threads + 1
end

local i = 0
local headers = {}

function init(args)
   i = (tonumber(os.getenv("BENCH_OFFSET") or "0") + (thread_id or 0) * 104729) % n
end

function request()
   i = i + 1
   if i > n then i = 1 end
   headers["Cookie"] = values[i]
   return wrk.format(nil, nil, headers)
end
