-- Shared by every script (prepended to each): the lease-set layout and its clock.
--
-- A lock's lease set is one hash. Fields:
--   limit      the limit the set was created with
--   seq        the order of the last waiting claim
--   L<id>      a lease: cjson {o = owner, m = 'x'|'s', p = permits, t = token, e = expiry_us,
--              d = metadata, a = the Redlock attempt that last granted it}; numbers are
--              kept as decimal strings (cjson rounds numbers to 14 digits, tokens and
--              microsecond times have 16)
--   C<id>      a waiting claim: cjson {w = weight, o = order, e = expiry_us}
-- The hash's own expiry is kept at the latest expiry of its entries, so an abandoned set
-- disappears on its own. All times come from the server's TIME, in microseconds.

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

-- Reads the set; with `purge`, deletes expired entries. Returns a table:
-- limit, leases (id -> record), claims (id -> record), count (valid entries), expired (true when
-- an entry expired and was deleted), max_e (latest expiry of a valid entry).
local function load(key, now, purge)
  local flat = redis.call('HGETALL', key)
  local s = {limit = nil, leases = {}, claims = {}, count = 0, expired = false, max_e = 0}
  for i = 1, #flat, 2 do
    local field, value = flat[i], flat[i + 1]
    local tag = string.sub(field, 1, 1)
    if field == 'limit' then
      s.limit = tonumber(value)
    elseif tag == 'L' or tag == 'C' then
      local rec = cjson.decode(value)
      local e = tonumber(rec.e)
      if e <= now then
        if purge then
          redis.call('HDEL', key, field)
          s.expired = true
        end
      else
        if tag == 'L' then
          s.leases[string.sub(field, 2)] = rec
        else
          s.claims[string.sub(field, 2)] = rec
        end
        s.count = s.count + 1
        if e > s.max_e then
          s.max_e = e
        end
      end
    end
  end
  return s
end

-- Deletes the set when it has no valid entry, else makes the hash live as long as its
-- latest entry.
local function store(key, s, now)
  if s.count <= 0 then
    redis.call('DEL', key)
  else
    local ms = math.floor((s.max_e - now) / 1000) + 1
    redis.call('PEXPIRE', key, fmt(ms))
  end
end

