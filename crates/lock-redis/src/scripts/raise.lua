-- Redlock's second round: raises the token counter to T (counter = max(counter, T)) and
-- records T as the token of the lease with this id.
-- KEYS: 1 H, 2 E (see common.lua), 3 the token counter, 4 F (the mutex fast path's lease).
-- ARGV: 1 lease id, 2 T, 3 counter margin (ms), 4 the attempt that granted the lease, 5 'm' for
-- a mutex (its lease may be F), else ''.
-- Returns 1 when this node holds the lease, unexpired, from this attempt (only then does the
-- raise count: a later incompatible grant here must follow the lease's end, hence this raise),
-- else 0.
local H, E, counter, id, t = KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2])
local now = now_us()
local last = tonumber(redis.call('GET', counter) or '0') or 0
if last < t then last = t end
set_counter(counter, last, now, tonumber(ARGV[3]))
if ARGV[5] == 'm' then
  local v = redis.call('GET', KEYS[4])
  if v then
    local token, a, fid, o = parse_fast(v)
    if fid ~= id or a ~= tonumber(ARGV[4]) then
      return 0
    end
    if token < t then
      local left = redis.call('PTTL', KEYS[4])
      if left <= 0 then
        return 0
      end
      redis.call('SET', KEYS[4], fast_record(t, a, id, o), 'PX', left)
    end
    return 1
  end
end
local raw = redis.call('HGET', H, 'L' .. id)
if not raw then
  return 0
end
local e = tonumber(redis.call('ZSCORE', E, 'L' .. id) or '0')
local token, w, a, m, p, o = parse(raw)
if e <= now or a ~= tonumber(ARGV[4]) then
  return 0
end
if token < t then
  redis.call('HSET', H, 'L' .. id, record(t, w, a, m, p, o))
end
return 1
