-- KEYS[1] = members, KEYS[2] = heard; ARGV[1] = member, ARGV[2] = lease (ms), ARGV[3] = heard
-- sequences, ARGV[4] = 'join' to (re)join. A renewal of a lease that ended or was taken away
-- is refused (0): the member must drop its tier and join again. Returns {granted lease (ms),
-- replicas in sync}.
if ARGV[4] ~= 'join' then
  local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not ends or tonumber(ends) < now then return {0, 0} end
end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease * 20)
redis.call('PEXPIRE', KEYS[2], lease * 20)
local replicas = 0
for _ in string.gmatch(redis.call('INFO', 'replication'), 'state=online') do replicas = replicas + 1 end
return {lease, replicas}
