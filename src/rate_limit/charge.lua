-- Charges one request's cost to each of its client's counters (its address's, and its
-- token's when it sent one) and answers, for each, the cost used in the current window and
-- the milliseconds left in it. A counter's first charge opens its window: the key expires
-- with it, so Redis keeps no client longer than one window.
-- KEYS: the counters, under one hash tag (one slot on a Redis Cluster).
-- ARGV[1]: the cost; ARGV[2]: the window in milliseconds.
local answer = {}
for _, key in ipairs(KEYS) do
  local used = redis.call('INCRBY', key, ARGV[1])
  local left = redis.call('PTTL', key)
  if left < 0 then
    redis.call('PEXPIRE', key, ARGV[2])
    left = tonumber(ARGV[2])
  end
  answer[#answer + 1] = used
  answer[#answer + 1] = left
end
return answer
