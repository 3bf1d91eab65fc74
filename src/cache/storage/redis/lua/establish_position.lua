-- ARGV[3] = a WAL position the primary has reached. Sets the position only when it is
-- unknown (lost with a new epoch or an eviction): any commit whose invalidation was recorded
-- before this script runs is at or before a position read from the primary afterwards.
floor()
if position() == '' then redis.call('SET', KEYS[3], ARGV[3]) end
return 1
