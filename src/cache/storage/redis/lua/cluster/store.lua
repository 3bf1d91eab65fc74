-- KEYS[2] = entry; ARGV[3] = fill sequence, ARGV[4] = encoded entry, ARGV[5] = TTL (s).
if tonumber(ARGV[3]) < floor() then return 0 end
redis.call('SET', KEYS[2], ARGV[4], 'EX', tonumber(ARGV[5]))
return 1
