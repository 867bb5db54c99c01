-- Many sessions in rotation: request i carries line i of BENCH_LINES as its Cookie header, or as the
-- header BENCH_HEADER names (10,000 users' tokens: validation cache cold; expired sessions with live
-- refresh tokens; forged or malformed Authorization values). Lines are bytes: anything but CR and LF.
-- Each run starts at line BENCH_OFFSET (the harness moves it on after every run, so consecutive runs
-- continue the rotation instead of repeating its start); each wrk thread at its own offset.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "summary.lua")
local values = {}
local path = assert(os.getenv("BENCH_LINES"), "BENCH_LINES is not set")
for line in io.lines(path) do
   values[#values + 1] = line
end
local n = #values
local header = os.getenv("BENCH_HEADER") or "Cookie"
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
   headers[header] = values[i]
   return wrk.format(nil, nil, headers)
end
