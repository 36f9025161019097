-- Deletes every lease and claim of the three kinds of one name and publishes the change.
-- KEYS: H, E, Q (see common.lua) of the mutex (1..3), the read-write lock (4..6) and the
-- semaphore (7..9), 10 F, the mutex fast path's lease (see common.lua); ARGV[1..3] their
-- change channels.
-- Returns how many valid leases were deleted.
local now = now_us()
local removed = redis.call('DEL', KEYS[10])
for i = 1, 3 do
  local H, E, Q = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local valid = redis.call('ZRANGEBYSCORE', E, '(' .. fmt(now), '+inf')
  for _, field in ipairs(valid) do
    if string.sub(field, 1, 1) == 'L' then
      removed = removed + 1
    end
  end
  redis.call('DEL', H, E, Q)
  redis.call('PUBLISH', ARGV[i], 'force-released')
end
return removed
