-- Deletes every lease and claim of the three kinds of one name and publishes the change.
-- KEYS[1..3] the lease sets; ARGV[1..3] their change channels.
-- Returns how many valid leases were deleted.
local now = now_us()
local removed = 0
for i = 1, 3 do
  local s = load(KEYS[i], now, false)
  for _ in pairs(s.leases) do
    removed = removed + 1
  end
  redis.call('DEL', KEYS[i])
  redis.call('PUBLISH', ARGV[i], 'force-released')
end
return removed
