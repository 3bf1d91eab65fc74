-- The miss path of LOOKUP, after the epoch helpers: a hit never defines them.
local lowest = floor()
return {unprovable and 2 or 0, redis.call('GET', KEYS[1]) or text(lowest), position()}
