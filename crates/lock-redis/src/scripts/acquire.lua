-- Adds a lease if it fits, else records (or refreshes) the request's waiting claim.
-- KEYS: 1 H, 2 E, 3 Q (see common.lua), 4 the token counter, 5 F (the mutex fast path's
--       lease, see common.lua).
-- ARGV: 1 lease id, 2 owner, 3 mode ('x' exclusive, 's' shared), 4 permits, 5 limit,
--       6 ttl (us), 7 claim ttl (us, 0 = no claim), 8 metadata, 9 change channel,
--       10 counter margin (ms: how long the counter outlives the clock passing it),
--       11 attempt (Redlock: this attempt's number, increasing across the attempts of one
--       lease id; 0 on one instance), 12 fast path: '' (not a mutex), 'm' (a mutex: F counts
--       as held) or 'f' (a mutex request that may take F), 13 the proposed token (0 = none).
-- Returns {'granted', token} | {'busy', retry_after_us or -1} | {'mismatch', stored_limit}.
-- A request with a claim ttl counts the claims ordered before its own (claims sort by lease
-- id, see common.lua), one without counts every claim.
local H, E, Q, counter, F = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, owner, mode = ARGV[1], ARGV[2], ARGV[3]
local permits, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, claim_ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local attempt = tonumber(ARGV[11]) or 0
local proposed = tonumber(ARGV[13] or '') or 0

local now = now_us()
local s = state(H, id)
-- Whenever the set exists, with or without its limit field: a roll-back of a fast-path lease
-- makes a set with a claim and no limit, and its claim must lapse like any other.
if purge(H, E, Q, now) then
  s = state(H, id)
  if s.n > 0 then
    redis.call('PUBLISH', ARGV[9], 'expired')
  end
end

-- A retry of a request that was granted (its answer lost in a timeout) gets the same lease,
-- valid from now: its expiry moves to at least now + ttl (the client counts the lease's
-- validity from this request). A later attempt takes the lease over, so that a roll-back of
-- an earlier one leaves it alone.
if s.lease then
  local t, w, a, m, p, o = parse(s.lease)
  if attempt > a then
    redis.call('HSET', H, 'L' .. id, record(t, w, attempt, m, p, o))
  end
  local expires = now + ttl
  local e = tonumber(redis.call('ZSCORE', E, 'L' .. id) or '0')
  if expires > e then
    redis.call('ZADD', E, expires, 'L' .. id)
    local x = live_until(H, E, Q, s, expires, now)
    if x then redis.call('HSET', H, 'x', fmt(x)) end
  end
  return {'granted', t}
end

if s.k > 0 and s.l ~= nil and s.l ~= limit then
  return {'mismatch', s.l}
end
local held = s.h
if s.k == 0 then held = 0 end
if fast_after then held = limit end
local weight = weight_of(mode, permits, limit)
local fits = held + weight <= limit
local mine = s.claim and 1 or 0
if fits and s.n > mine then
  -- The claims ahead: all of them without a claim of our own, else those ordered before ours.
  -- Read in small batches, stopping as soon as they fill the room.
  local room = limit - held - weight
  local hi = '+'
  if claim_ttl > 0 then hi = '(' .. id end
  local offset = 0
  while fits do
    local ids = redis.call('ZRANGEBYLEX', Q, '-', hi, 'LIMIT', offset, 16)
    if #ids == 0 then break end
    local fields = {}
    for i, cid in ipairs(ids) do fields[i] = 'C' .. cid end
    local weights = redis.call('HMGET', H, unpack(fields))
    for _, w in ipairs(weights) do
      room = room - (tonumber(w) or 0)
      if room < 0 then
        fits = false
        break
      end
    end
    offset = offset + #ids
  end
end

if fits then
  local token = next_token(counter, now, proposed)
  set_counter(counter, token, now, tonumber(ARGV[10]))
  local expires = now + ttl
  local fields = {
    'L' .. id, record(token, weight, attempt, mode, ARGV[4], owner),
    'h', fmt(held + weight)
  }
  if mine == 1 then
    -- The claim turns into the lease: one entry for another.
    redis.call('HDEL', H, 'C' .. id)
    redis.call('ZREM', Q, id)
    redis.call('ZREM', E, 'C' .. id)
    s.n = s.n - 1
    table.insert(fields, 'n')
    table.insert(fields, fmt(s.n))
  else
    table.insert(fields, 'k')
    table.insert(fields, fmt(s.k + 1))
  end
  if s.k == 0 or s.l == nil then
    table.insert(fields, 'l')
    table.insert(fields, fmt(limit))
  end
  if ARGV[8] ~= '' then
    table.insert(fields, 'D' .. id)
    table.insert(fields, ARGV[8])
  end
  if s.k == 0 then s.x = 0 end
  if expires > s.x then
    table.insert(fields, 'x')
    table.insert(fields, fmt(expires))
  end
  redis.call('HSET', H, unpack(fields))
  redis.call('ZADD', E, expires, 'L' .. id)
  live_until(H, E, Q, s, expires, now)
  return {'granted', token}
end

if claim_ttl > 0 then
  local expires = now + claim_ttl
  if mine == 0 then
    s.n = s.n + 1
    redis.call('HSET', H, 'C' .. id, fmt(weight), 'n', fmt(s.n), 'k', fmt(s.k + 1))
    redis.call('ZADD', Q, 0, id)
  end
  redis.call('ZADD', E, expires, 'C' .. id)
  local x = live_until(H, E, Q, s, expires, now)
  if x then
    redis.call('HSET', H, 'x', fmt(x))
  else
    redis.call('PEXPIRE', Q, fmt(math.floor((s.x - now) / 1000) + 1))
  end
end
local after = retry_after(E, now)
if fast_after and (after < 0 or fast_after < after) then after = fast_after end
return {'busy', after}
