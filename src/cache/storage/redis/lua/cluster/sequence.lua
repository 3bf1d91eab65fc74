local lowest = floor()
return {redis.call('HGET', KEYS[1], '#seq') or text(lowest), position()}
