-- pipeline.lua: 16-deep HTTP/1.1 pipelining for wrk, TechEmpower plaintext style.
--
--   wrk -t1 -c16 -d10s -s bench/wrk/pipeline.lua http://127.0.0.1:PORT/ [-- DEPTH]
--
-- init builds one batch of DEPTH (default 16) copies of `GET <path> HTTP/1.1`
-- (wrk.format, so each carries the Host header and any -H headers) and
-- request() returns the whole batch, written in one go. wrk parses the first
-- batch when it starts, sets its pipeline depth to the number of requests in
-- it, and counts every response: "requests" and Requests/sec are responses,
-- not batches (latency is recorded once per batch, for its last response).

local depth = 16
local batch

function init(args)
  depth = tonumber(args[1]) or depth
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()
  end
  batch = table.concat(r)
end

function request()
  return batch
end
