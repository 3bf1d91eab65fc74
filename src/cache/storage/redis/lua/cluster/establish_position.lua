floor()
if position() == '' then redis.call('HSET', KEYS[1], '#lsn', ARGV[3]) end
return 1
