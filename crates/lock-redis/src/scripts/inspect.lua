-- Lists the valid leases of the three kinds of one name, read-only.
-- KEYS[1..3] the lease sets of the mutex, the read-write lock and the semaphore.
-- Returns a flat array, 8 items per lease: kind index (1..3), lease id, owner, mode, permits,
-- token, microseconds left, metadata.
local now = now_us()
local out = {}
for i = 1, 3 do
  local s = load(KEYS[i], now, false)
  for id, l in pairs(s.leases) do
    table.insert(out, tostring(i))
    table.insert(out, id)
    table.insert(out, l.o)
    table.insert(out, l.m)
    table.insert(out, l.p)
    table.insert(out, l.t)
    table.insert(out, fmt(tonumber(l.e) - now))
    table.insert(out, l.d)
  end
end
return out
