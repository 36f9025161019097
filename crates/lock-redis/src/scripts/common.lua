-- Shared by every script (prepended to each): the lease-set layout and its clock.
--
-- A lock's lease set is three keys sharing the lock's hash tag:
--   H (hash)    l         the limit the set was created with
--               h         the held weight: the sum of the weights of the leases in the set
--               k         the number of entries (leases and claims) in E
--               n         the number of waiting claims
--               x         the latest expiry (us) the three keys were made to live until
--               L<id>     a lease: 'token|weight|attempt|mode|permits|owner' (mode 'x' or 's';
--                         attempt: the Redlock attempt that last granted it, 0 on one instance)
--               D<id>     the lease's metadata, only when not empty (read only by inspect)
--               C<id>     a waiting claim: its weight
--   E (zset)    L<id>, C<id> scored by their expiry (us): expired entries are found with
--               ZRANGEBYSCORE, without reading the others
--   Q (zset)    the waiting claims' ids, all scored 0, so in lexicographic order: a lease id is
--               a ULID, whose text sorts by the time its request started, so every instance of
--               a Redlock set ranks the waiters alike
-- Every operation costs the same however many entries the set holds (the purge is O(log n)
-- plus the entries that expired; the counts above save reading the entries). H exists exactly
-- while E holds an entry: the keys live until the latest expiry of their entries and are
-- deleted together once no entry is left. All times come from the server's TIME, in
-- microseconds.

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- Stores the token counter at `value`, with an expiry `margin_ms` after the server clock
-- passes it: tokens are max(counter + 1, now), so once the clock is ahead the counter adds
-- nothing, and an idle lock name leaves no key behind. The margin is the step back of the
-- server clock that tokens survive.
local function set_counter(counter, value, now, margin_ms)
  local ms = math.floor((value - now) / 1000) + margin_ms
  if ms < 1 then ms = 1 end
  redis.call('SET', counter, fmt(value), 'PX', fmt(ms))
end

-- The weight of an entry: the whole limit when exclusive, its permits when shared.
local function weight_of(mode, permits, limit)
  if mode == 'x' then
    return limit
  end
  return permits
end

-- A lease record's fields: token, weight, attempt, mode, permits, owner.
local function parse(v)
  local t, w, a, m, p, o = string.match(v, '^(%d+)|(%d+)|(%d+)|(%a)|(%d+)|(.*)$')
  return tonumber(t), tonumber(w), tonumber(a), m, p, o
end

local function record(token, weight, attempt, mode, permits, owner)
  return fmt(token) .. '|' .. fmt(weight) .. '|' .. fmt(attempt) .. '|' .. mode .. '|'
    .. permits .. '|' .. owner
end

-- The fields every script starts from, as numbers (0 when missing) except the limit (nil when
-- missing) and the records of `id`'s lease and claim.
local function state(H, id)
  local f = redis.call('HMGET', H, 'l', 'h', 'k', 'n', 'x', 'L' .. id, 'C' .. id)
  return {
    l = tonumber(f[1]), h = tonumber(f[2]) or 0, k = tonumber(f[3]) or 0,
    n = tonumber(f[4]) or 0, x = tonumber(f[5]) or 0, lease = f[6], claim = f[7]
  }
end

-- Deletes the entries that expired by `now`, keeping the counts right, and the whole set once
-- nothing is left. Returns true when any entry went.
local function purge(H, E, Q, now)
  local gone = redis.call('ZRANGEBYSCORE', E, '-inf', now)
  if #gone == 0 then
    return false
  end
  local freed, claims = 0, 0
  for _, field in ipairs(gone) do
    local id = string.sub(field, 2)
    if string.sub(field, 1, 1) == 'L' then
      local v = redis.call('HGET', H, field)
      if v then
        local _, w = parse(v)
        freed = freed + (w or 0)
      end
      redis.call('HDEL', H, field, 'D' .. id)
    else
      redis.call('HDEL', H, field)
      redis.call('ZREM', Q, id)
      claims = claims + 1
    end
  end
  if redis.call('HINCRBY', H, 'k', -#gone) <= 0 then
    redis.call('DEL', H, E, Q)
    return true
  end
  redis.call('ZREMRANGEBYSCORE', E, '-inf', now)
  if freed > 0 then
    redis.call('HINCRBY', H, 'h', -freed)
  end
  if claims > 0 then
    redis.call('HINCRBY', H, 'n', -claims)
  end
  return true
end

-- Makes the keys live until `expires` (us) when that is later than `s.x`; call after writing
-- them. Returns the new `x` to store, or nil.
local function live_until(H, E, Q, s, expires, now)
  if expires <= s.x then
    return nil
  end
  local ms = fmt(math.floor((expires - now) / 1000) + 1)
  redis.call('PEXPIRE', H, ms)
  redis.call('PEXPIRE', E, ms)
  if s.n > 0 then
    redis.call('PEXPIRE', Q, ms)
  end
  return expires
end

-- The earliest expiry of an entry minus now (at least 1), or -1 when there is none.
local function retry_after(E, now)
  local first = redis.call('ZRANGE', E, 0, 0, 'WITHSCORES')
  if first[2] == nil then
    return -1
  end
  local after = tonumber(first[2]) - now
  if after < 1 then after = 1 end
  return after
end

-- How far above its own next token an instance takes a client's proposal (us). A proposal
-- further ahead (a client clock far ahead, or a token remembered from another lock) is
-- ignored: the instances then grant their own tokens and the client raises them to one, so
-- tokens stay correct, but no counter is pushed far ahead of the clock, where its key would
-- live until the clock passed it. Also in acquire_fast.lua.
local MAX_LEAD_US = 60000000

-- The next token: above the counter and the server clock, and the token the client proposed
-- when it is at most MAX_LEAD_US further (Redlock: the same proposal on every instance makes
-- them grant the same token).
local function next_token(counter, now, proposed)
  local token = (tonumber(redis.call('GET', counter) or '0') or 0) + 1
  if now > token then token = now end
  if proposed > token and proposed - token <= MAX_LEAD_US then token = proposed end
  return token
end

-- The mutex fast path (a mutex's lease on its own, without waiters, see keys.rs): one string
-- key F 'token|attempt|id|owner' with the server's native expiry. It is granted only while
-- the lease set H does not exist, and the general path counts it as held.
local function parse_fast(v)
  local t, a, i, o = string.match(v, '^(%d+)|(%d+)|([^|]*)|(.*)$')
  return tonumber(t), tonumber(a), i, o
end

local function fast_record(token, attempt, id, owner)
  return fmt(token) .. '|' .. fmt(attempt) .. '|' .. id .. '|' .. owner
end

-- Microseconds as whole milliseconds, rounded up, at least 1.
local function ms_of(us)
  local ms = math.ceil(us / 1000)
  if ms < 1 then ms = 1 end
  return ms
end
