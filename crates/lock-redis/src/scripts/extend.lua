-- Sets a valid lease's expiry to now + ttl; never re-creates an expired one.
-- KEYS: 1 H, 2 E, 3 Q (see common.lua), 4 F (the mutex fast path's lease). ARGV: 1 lease id,
-- 2 ttl (us), 3 change channel, 4 'm' for a mutex (its lease may be F), else ''.
-- Returns the set's limit when extended, 0 when no valid lease has this id.
local H, E, Q, id, ttl = KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2])
if ARGV[4] == 'm' then
  local v = redis.call('GET', KEYS[4])
  if v then
    local _, _, fid = parse_fast(v)
    if fid ~= id then
      -- Held by another lease: this one is not held.
      return 0
    end
    redis.call('PEXPIRE', KEYS[4], ms_of(ttl))
    return 1
  end
end
local now = now_us()
local e = tonumber(redis.call('ZSCORE', E, 'L' .. id) or '0')
if e <= now then
  if e > 0 and purge(H, E, Q, now) and (tonumber(redis.call('HGET', H, 'n')) or 0) > 0 then
    redis.call('PUBLISH', ARGV[3], 'expired')
  end
  return 0
end
local f = redis.call('HMGET', H, 'l', 'x', 'n')
local s = {x = tonumber(f[2]) or 0, n = tonumber(f[3]) or 0}
local expires = now + ttl
redis.call('ZADD', E, expires, 'L' .. id)
local x = live_until(H, E, Q, s, expires, now)
if x then redis.call('HSET', H, 'x', fmt(x)) end
return tonumber(f[1]) or 1
