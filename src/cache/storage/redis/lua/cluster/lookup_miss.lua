local lowest = floor()
return {unprovable and 2 or 0, redis.call('HGET', KEYS[1], '#seq') or text(lowest), position()}
