-- wrk script: every request is a 1 KiB JSON POST carrying one pre-signed record of
-- X-Gate-* headers (unique nonce, valid signature), taken in order from a slice of the
-- records file that `sig-gate-loadgen sign` wrote. Every target gets the same bytes.
--
-- usage: wrk ... -s bench/wrk/signed.lua URL -- DIR RECORD_LEN FIRST COUNT
-- Each wrk thread takes its own share of the slice, so no nonce is sent twice; running past
-- the slice wraps around (a sig-gate target then answers 401 replayed_nonce, which the
-- benchmark counts as a failed run) and is reported by done().

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local function slurp(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

local head, tail, records, reclen, count
local i = 0
wrapped = 0

function init(args)
   local dir = args[1]
   reclen = tonumber(args[2])
   local first = tonumber(args[3])
   local total = tonumber(args[4])
   local nthreads = tonumber(args[5] or "1")
   -- This thread's share: contiguous, disjoint from the other threads' shares.
   local share = math.floor(total / nthreads)
   local start = first + id * share
   head = slurp(dir .. "/head")
   tail = slurp(dir .. "/tail")
   local f = assert(io.open(dir .. "/records", "rb"))
   f:seek("set", start * reclen)
   records = f:read(share * reclen)
   f:close()
   count = math.floor(#records / reclen)
   assert(count > 0, "no pre-signed records in the slice")
end

function request()
   local off = i * reclen
   i = i + 1
   if i >= count then
      i = 0
      wrapped = wrapped + 1
   end
   return head .. string.sub(records, off + 1, off + reclen) .. tail
end

function done(summary, latency, requests)
   local w = 0
   for _, t in ipairs(threads) do
      w = w + (t:get("wrapped") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"status_errors":%d,"timeouts":%d,"wrapped":%d,' ..
      '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,' ..
      '"lat_max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, w, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max))
end
