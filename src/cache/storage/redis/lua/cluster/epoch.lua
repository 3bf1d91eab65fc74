-- Every cluster script starts with this. KEYS[1] = the partition's hash; ARGV[1] = clock (µs),
-- ARGV[2] = the partition's channel. As on a single Redis (see `../epoch.lua`), but the floor
-- also checks the node: the run id recorded beside the data must be this process's, else the
-- node restarted or is a promoted replica whose copy may lack writes (replication is
-- asynchronous) and a new epoch starts. A hit does not run this (it is defined after the hit
-- path); every fill, sequence read and invalidation does.
local function text(number) return string.format('%.0f', number) end
local function position() return redis.call('HGET', KEYS[1], '#lsn') or '' end
local function new_epoch()
  local start = math.max(tonumber(redis.call('HGET', KEYS[1], '#seq') or '0'), tonumber(ARGV[1])) + 1
  redis.call('HSET', KEYS[1], '#seq', text(start), '#floor', text(start))
  redis.call('HDEL', KEYS[1], '#lsn')
  redis.call('SPUBLISH', ARGV[2], text(start) .. ' *')
  return start
end
local function floor()
  local recorded = redis.call('HMGET', KEYS[1], '#floor', '#runid')
  local node = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if recorded[1] and recorded[2] == node then return tonumber(recorded[1]) end
  local start = new_epoch()
  redis.call('HSET', KEYS[1], '#runid', node)
  return start
end
