-- Redlock's second round: raises the token counter to T (counter = max(counter, T)) and
-- records T as the token of the lease with this id.
-- KEYS[1] the lease set, KEYS[2] the token counter. ARGV: 1 lease id, 2 T, 3 counter margin (ms),
-- 4 the attempt that granted the lease.
-- Returns 1 when this node holds the lease, unexpired, from this attempt (only then does the
-- raise count: a later incompatible grant here must follow the lease's end, hence this raise),
-- else 0.
local key, counter, id, t = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local now = now_us()
local last = tonumber(redis.call('GET', counter) or '0') or 0
if last < t then last = t end
set_counter(counter, last, now, tonumber(ARGV[3]))
local raw = redis.call('HGET', key, 'L' .. id)
if not raw then
  return 0
end
local lease = cjson.decode(raw)
if tonumber(lease.e) <= now or (tonumber(lease.a) or 0) ~= tonumber(ARGV[4]) then
  return 0
end
if tonumber(lease.t) < t then
  lease.t = fmt(t)
  redis.call('HSET', key, 'L' .. id, cjson.encode(lease))
end
return 1
