-- The mutex fast path of release.lua (see its arguments), run before anything else is
-- defined: a compare-and-delete of F (KEYS[4], see acquire_fast.lua) that publishes only when
-- someone waits. Redlock's roll-back of a waiting request is left to release.lua: its lease
-- turns back into its claim there.
if ARGV[5] == 'm' and (tonumber(ARGV[4]) or 0) == 0 then
  local v = redis.call('GET', KEYS[4])
  if v then
    local a, fid = string.match(v, '^%d+|(%d+)|([^|]*)|')
    if fid == ARGV[1] then
      if ARGV[3] ~= '' and a ~= ARGV[3] then
        return 0
      end
      redis.call('DEL', KEYS[4])
      if (tonumber(redis.call('HGET', KEYS[1], 'n') or '0') or 0) > 0 then
        redis.call('PUBLISH', ARGV[2], 'released')
      end
      return 1
    end
  end
end
