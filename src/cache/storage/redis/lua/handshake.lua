-- KEYS[4] = the run id key; ARGV[3] = this Redis process's run id (INFO server). Run on every
-- new connection: a different run id means this Redis restarted (perhaps from an old snapshot)
-- or is a promoted replica, so its invalidation history cannot be trusted: new epoch.
if redis.call('GET', KEYS[4]) == ARGV[3] then return 0 end
local start = new_epoch()
redis.call('SET', KEYS[4], ARGV[3])
return text(start)
