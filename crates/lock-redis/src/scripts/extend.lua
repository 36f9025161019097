-- Sets a valid lease's expiry to now + ttl; never re-creates an expired one.
-- KEYS[1] the lease set. ARGV: 1 lease id, 2 ttl (us), 3 change channel.
-- Returns the set's limit when extended, 0 when no valid lease has this id.
local key, id, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = now_us()
local s = load(key, now, true)
if s.expired and next(s.claims) ~= nil then
  redis.call('PUBLISH', ARGV[3], 'expired')
end
local lease = s.leases[id]
if not lease then
  store(key, s, now)
  return 0
end
local expires = now + ttl
lease.e = fmt(expires)
redis.call('HSET', key, 'L' .. id, cjson.encode(lease))
if expires > s.max_e then s.max_e = expires end
store(key, s, now)
return s.limit or 1
