-- Deletes the lease and the waiting claim with this id, and publishes the change when someone
-- waits (every waiter has a claim here before it waits for a message, so nobody else listens).
-- KEYS[1] the lease set. ARGV: 1 lease id, 2 change channel, 3 attempt (optional).
-- With an attempt (Redlock's roll-back of one attempt), only the lease that attempt granted is
-- deleted, and the claim stays: a later attempt of the same request may have taken both over.
-- Returns the set's limit when a valid lease was deleted, 0 when none had this id.
local key, id = KEYS[1], ARGV[1]
local attempt = tonumber(ARGV[3] or '')
local now = now_us()
local s = load(key, now, true)
local changed = s.expired
local held = 0
local lease = s.leases[id]
if lease and attempt and (tonumber(lease.a) or 0) ~= attempt then
  lease = nil
end
if lease then
  redis.call('HDEL', key, 'L' .. id)
  s.count = s.count - 1
  held = s.limit or 1
  changed = true
end
if s.claims[id] and not attempt then
  redis.call('HDEL', key, 'C' .. id)
  s.claims[id] = nil
  s.count = s.count - 1
  changed = true
end
store(key, s, now)
if changed and next(s.claims) ~= nil then
  redis.call('PUBLISH', ARGV[2], 'released')
end
return held
