-- Deletes the lease and the waiting claim with this id, and publishes the change when someone
-- waits (every waiter has a claim here before it waits for a message, so nobody else listens).
-- Reads only this id's entries and the set's counts.
-- KEYS: 1 H, 2 E, 3 Q (see common.lua), 4 F (the mutex fast path's lease). ARGV: 1 lease id,
-- 2 change channel, 3 attempt ('' = none), 4 claim ttl (us, '' or 0 = none), 5 'm' for a
-- mutex (its lease may be F), else ''.
-- With an attempt (Redlock's roll-back of one attempt), only the lease that attempt granted is
-- deleted, and the claim stays: a later attempt of the same request may have taken both over.
-- With a claim ttl too, the rolled-back lease turns back into a waiting claim, which keeps its
-- place (claims are ordered by lease id): the waiter does not go to the back of the queue.
-- Returns the set's limit when a valid lease was deleted, 0 when none had this id.
local H, E, Q, F, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local attempt = tonumber(ARGV[3] or '')
local claim_ttl = tonumber(ARGV[4] or '') or 0

-- Redlock's roll-back of a waiting request whose lease is F (see release_fast.lua): the lease
-- turns back into its claim, which keeps its place.
if ARGV[5] == 'm' and attempt and claim_ttl > 0 then
  local v = redis.call('GET', F)
  if v then
    local _, a, fid = parse_fast(v)
    if fid == id then
      if a ~= attempt then
        return 0
      end
      redis.call('DEL', F)
      local now = now_us()
      local s = state(H, id)
      local waiting = s.n
      if not s.claim then
        if s.k == 0 then s.x = 0 end
        s.n = s.n + 1
        local expires = now + claim_ttl
        local fields = {'C' .. id, '1', 'n', fmt(s.n), 'k', fmt(s.k + 1)}
        redis.call('ZADD', Q, 0, id)
        redis.call('ZADD', E, expires, 'C' .. id)
        local x = live_until(H, E, Q, s, expires, now)
        if x then
          table.insert(fields, 'x')
          table.insert(fields, fmt(x))
        else
          redis.call('PEXPIRE', Q, fmt(math.floor((s.x - now) / 1000) + 1))
        end
        redis.call('HSET', H, unpack(fields))
      end
      if waiting > 0 then
        redis.call('PUBLISH', ARGV[2], 'released')
      end
      return 1
    end
  end
end

local now = now_us()
local s = state(H, id)
if s.lease or s.claim then
  local e = tonumber(redis.call('ZSCORE', E, 'L' .. id) or '0')
  if s.lease and e <= now then
    -- It expired: not held. The purge deletes it (and whatever else expired).
    purge(H, E, Q, now)
    s = state(H, id)
  end
end
local held = 0
local changed = false
local k, n, h = s.k, s.n, s.h
local dels = {}
local weight = 0
if s.lease then
  local _, w, a = parse(s.lease)
  if not attempt or a == attempt then
    weight = w
    table.insert(dels, 'L' .. id)
    table.insert(dels, 'D' .. id)
    k = k - 1
    h = h - w
    held = s.l or 1
    changed = true
  end
end
local to_claim = held > 0 and attempt and claim_ttl > 0 and not s.claim
local drop_claim = s.claim and not attempt
if drop_claim then
  table.insert(dels, 'C' .. id)
  k = k - 1
  n = n - 1
  changed = true
end
if not changed then
  return 0
end
if k <= 0 and not to_claim then
  redis.call('DEL', H, E, Q)
  return held
end
if #dels > 0 then
  redis.call('HDEL', H, unpack(dels))
  if weight > 0 then redis.call('ZREM', E, 'L' .. id) end
  if drop_claim then
    redis.call('ZREM', E, 'C' .. id)
    redis.call('ZREM', Q, id)
  end
end
local fields = {'h', fmt(h), 'k', fmt(k), 'n', fmt(n)}
if to_claim then
  local expires = now + claim_ttl
  n = n + 1
  k = k + 1
  fields = {'h', fmt(h), 'k', fmt(k), 'n', fmt(n), 'C' .. id, fmt(weight)}
  redis.call('ZADD', Q, 0, id)
  redis.call('ZADD', E, expires, 'C' .. id)
  s.n = n
  local x = live_until(H, E, Q, s, expires, now)
  if x then
    table.insert(fields, 'x')
    table.insert(fields, fmt(x))
  else
    redis.call('PEXPIRE', Q, fmt(math.floor((s.x - now) / 1000) + 1))
  end
end
redis.call('HSET', H, unpack(fields))
if n > 0 then
  redis.call('PUBLISH', ARGV[2], 'released')
end
return held
