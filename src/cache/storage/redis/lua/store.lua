-- KEYS[4] = entry; ARGV[3] = the entry's fill sequence, ARGV[4] = encoded entry, ARGV[5] = TTL.
-- A fill from before the floor is dropped: it may have missed invalidations that were lost.
local current = redis.call('GET', KEYS[2])
if not current or tonumber(ARGV[3]) < tonumber(current) then return 0 end
redis.call('SET', KEYS[4], ARGV[4], 'EX', tonumber(ARGV[5]))
return 1
