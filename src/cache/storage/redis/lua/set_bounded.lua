-- KEYS[1] = the collection (a sorted set of its members' keys, scored by when each was set),
-- KEYS[2] = the key; ARGV[1] = value, ARGV[2] = TTL (s), ARGV[3] = capacity, ARGV[4] = clock
-- (ms). Forgets members that expired, sets the key, then deletes the least recently set
-- members beyond the capacity.
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[4]) - ttl * 1000)
redis.call('SET', KEYS[2], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[1], ARGV[4], KEYS[2])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
  redis.call('DEL', unpack(oldest))
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
