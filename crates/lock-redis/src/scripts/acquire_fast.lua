-- The mutex fast path of acquire.lua (see its arguments), run before anything else is defined:
-- a mutex's lease on its own is the string key F (KEYS[5]) 'token|attempt|id|owner' with the
-- server's native expiry, granted only while the lease set H (KEYS[1]) does not exist, that
-- is while nobody else holds the mutex or waits for it. The general path counts F as held:
-- `fast_after` is then the µs until it expires.
local fast_after = nil
if ARGV[12] == 'f' or ARGV[12] == 'm' then
  local id, ttl = ARGV[1], tonumber(ARGV[6])
  local ms = math.ceil(ttl / 1000)
  if ms < 1 then ms = 1 end
  local v = redis.call('GET', KEYS[5])
  if v then
    local t, a, fid, o = string.match(v, '^(%d+)|(%d+)|([^|]*)|(.*)$')
    local left = redis.call('PTTL', KEYS[5])
    if fid == id then
      -- A retry of the request that holds F (its answer lost): the same lease, valid from
      -- now; a later Redlock attempt takes it over.
      if left > ms then ms = left end
      if (tonumber(ARGV[11]) or 0) > tonumber(a) then
        redis.call('SET', KEYS[5], t .. '|' .. ARGV[11] .. '|' .. id .. '|' .. o, 'PX', ms)
      elseif ms > left then
        redis.call('PEXPIRE', KEYS[5], ms)
      end
      return {'granted', tonumber(t)}
    end
    fast_after = left * 1000
    if fast_after < 1 then fast_after = 1 end
    if tonumber(ARGV[7]) == 0 then
      return {'busy', fast_after}
    end
  elseif ARGV[12] == 'f' and redis.call('EXISTS', KEYS[1]) == 0 then
    local clock = redis.call('TIME')
    local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
    -- As next_token and set_counter in common.lua.
    local token = (tonumber(redis.call('GET', KEYS[4]) or '0') or 0) + 1
    if now > token then token = now end
    local proposed = tonumber(ARGV[13]) or 0
    -- common.lua's MAX_LEAD_US (this prelude runs before common.lua's definitions).
    if proposed > token and proposed - token <= 60000000 then token = proposed end
    local text = string.format('%.0f', token)
    local keep = math.floor((token - now) / 1000) + tonumber(ARGV[10])
    if keep < 1 then keep = 1 end
    redis.call('SET', KEYS[4], text, 'PX', keep)
    redis.call('SET', KEYS[5], text .. '|' .. ARGV[11] .. '|' .. id .. '|' .. ARGV[2], 'PX', ms)
    return {'granted', token}
  end
end
