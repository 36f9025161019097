-- Adds a lease if it fits, else records (or refreshes) the request's waiting claim.
-- KEYS[1] the lease set, KEYS[2] the token counter.
-- ARGV: 1 lease id, 2 owner, 3 mode ('x' exclusive, 's' shared), 4 permits, 5 limit,
--       6 ttl (us), 7 claim ttl (us, 0 = no claim), 8 metadata, 9 change channel,
--       10 counter margin (ms: how long the counter outlives the clock passing it), 11 attempt (Redlock: this attempt's number, increasing across
--       the attempts of one lease id; 0 on one instance).
-- Returns {'granted', token} | {'busy', retry_after_us or ''} | {'mismatch', stored_limit}.
local key, counter = KEYS[1], KEYS[2]
local id, owner, mode = ARGV[1], ARGV[2], ARGV[3]
local permits, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, claim_ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_us()
local s = load(key, now, true)
if s.expired and next(s.claims) ~= nil then
  redis.call('PUBLISH', ARGV[9], 'expired')
end

-- A retry of a request that was granted (its answer lost in a timeout) gets the same lease,
-- valid from now: its expiry moves to at least now + ttl (the client counts the lease's
-- validity from this request). A later attempt takes the lease over, so that a roll-back of
-- an earlier one leaves it alone.
local attempt = tonumber(ARGV[11]) or 0
local mine_lease = s.leases[id]
if mine_lease then
  if attempt > (tonumber(mine_lease.a) or 0) then
    mine_lease.a = fmt(attempt)
  end
  local expires = now + ttl
  if expires > tonumber(mine_lease.e) then
    mine_lease.e = fmt(expires)
  end
  redis.call('HSET', key, 'L' .. id, cjson.encode(mine_lease))
  if expires > s.max_e then s.max_e = expires end
  store(key, s, now)
  return {'granted', mine_lease.t}
end

if s.count > 0 and s.limit ~= nil and s.limit ~= limit then
  store(key, s, now)
  return {'mismatch', fmt(s.limit)}
end
if s.count == 0 or s.limit == nil then
  redis.call('HSET', key, 'limit', fmt(limit))
  s.limit = limit
end

local held = 0
local first = nil
for _, l in pairs(s.leases) do
  held = held + weight_of(l.m, tonumber(l.p), limit)
  local e = tonumber(l.e)
  if first == nil or e < first then first = e end
end
local mine = s.claims[id]
local my_order = mine and tonumber(mine.o) or nil
local waiting = 0
for cid, c in pairs(s.claims) do
  if cid ~= id and (my_order == nil or tonumber(c.o) < my_order) then
    waiting = waiting + tonumber(c.w)
    local e = tonumber(c.e)
    if first == nil or e < first then first = e end
  end
end
local weight = weight_of(mode, permits, limit)

if held + waiting + weight <= limit then
  if mine then
    redis.call('HDEL', key, 'C' .. id)
  end
  local last = tonumber(redis.call('GET', counter) or '0') or 0
  local token = last + 1
  if now > token then token = now end
  set_counter(counter, token, now, tonumber(ARGV[10]))
  local expires = now + ttl
  redis.call('HSET', key, 'L' .. id, cjson.encode({
    o = owner, m = mode, p = fmt(permits), t = fmt(token), e = fmt(expires), d = ARGV[8],
    a = fmt(attempt)
  }))
  s.count = s.count + 1
  if expires > s.max_e then s.max_e = expires end
  store(key, s, now)
  return {'granted', fmt(token)}
end

if claim_ttl > 0 then
  local expires = now + claim_ttl
  local order
  if mine then
    order = mine.o
  else
    order = fmt(redis.call('HINCRBY', key, 'seq', 1))
    s.count = s.count + 1
  end
  redis.call('HSET', key, 'C' .. id, cjson.encode({w = fmt(weight), o = order, e = fmt(expires)}))
  if expires > s.max_e then s.max_e = expires end
end
store(key, s, now)
if first == nil then
  return {'busy', ''}
end
return {'busy', fmt(first - now)}
