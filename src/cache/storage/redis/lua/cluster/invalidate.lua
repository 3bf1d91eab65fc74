-- KEYS[2] = the stamped set; ARGV[3] = stamp TTL (s), ARGV[4..n-1] = tags, ARGV[n] = WAL
-- position ('' for none). Returns {seq, replicas in sync} (a replica still loading its first
-- copy cannot acknowledge anything yet). A stamp older than the stamp TTL
-- can retire no entry (no entry outlives it, see `MAX_FILL_AGE`), so each call forgets up to
-- 256 of those, more than the 68 tags one call may add: the hash holds the tags stamped
-- within the stamp TTL plus a backlog that only shrinks.
floor()
local seq = redis.call('HINCRBY', KEYS[1], '#seq', 1)
local now = redis.call('TIME')
local millis = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local last = #ARGV - 1
for i = 4, last do
  redis.call('HSET', KEYS[1], ARGV[i], text(seq))
  redis.call('ZADD', KEYS[2], millis, ARGV[i])
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', millis - tonumber(ARGV[3]) * 1000, 'LIMIT', 0, 256)
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREM', KEYS[2], unpack(expired))
end
local lsn = ARGV[#ARGV]
if lsn ~= '' then
  local current = position()
  if current == '' or #lsn > #current or (#lsn == #current and lsn > current) then
    redis.call('HSET', KEYS[1], '#lsn', lsn)
  end
end
redis.call('SPUBLISH', ARGV[2], text(seq) .. ' ' .. table.concat(ARGV, ' ', 4, last))
local replicas = 0
for _ in string.gmatch(redis.call('INFO', 'replication'), 'state=online') do replicas = replicas + 1 end
return {text(seq), replicas}
