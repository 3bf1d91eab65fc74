-- Returns {seq, lsn}: the current sequence and WAL position (a fill records them before it
-- executes).
local lowest = floor()
return {redis.call('GET', KEYS[1]) or text(lowest), position()}
