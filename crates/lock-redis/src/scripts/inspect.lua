-- Lists the valid leases of the three kinds of one name, read-only (the one script whose cost
-- grows with the number of holders).
-- KEYS: the H and E keys (see common.lua) of the mutex, the read-write lock and the semaphore:
-- 1 H, 2 E of the mutex, 3 H, 4 E of the read-write lock, 5 H, 6 E of the semaphore; 7 F, the
-- mutex fast path's lease (see common.lua).
-- Returns a flat array, 9 items per lease: kind index (1..3), lease id, owner, mode, permits,
-- token, microseconds left, metadata, the set's limit.
local now = now_us()
local out = {}
for i = 1, 3 do
  local H, E = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = redis.call('HGET', H, 'l') or '1'
  local valid = redis.call('ZRANGEBYSCORE', E, '(' .. fmt(now), '+inf', 'WITHSCORES')
  for j = 1, #valid, 2 do
    local field = valid[j]
    if string.sub(field, 1, 1) == 'L' then
      local id = string.sub(field, 2)
      local v, d = unpack(redis.call('HMGET', H, field, 'D' .. id))
      if v then
        local t, _, _, m, p, o = parse(v)
        table.insert(out, tostring(i))
        table.insert(out, id)
        table.insert(out, o)
        table.insert(out, m)
        table.insert(out, p)
        table.insert(out, fmt(t))
        table.insert(out, fmt(tonumber(valid[j + 1]) - now))
        table.insert(out, d or '')
        table.insert(out, limit)
      end
    end
  end
end
local v = redis.call('GET', KEYS[7])
if v then
  local left = redis.call('PTTL', KEYS[7])
  if left > 0 then
    local t, _, fid, o = parse_fast(v)
    for _, item in ipairs({'1', fid, o, 'x', '1', fmt(t), fmt(left * 1000), '', '1'}) do
      table.insert(out, item)
    end
  end
end
return out
