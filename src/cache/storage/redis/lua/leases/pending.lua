-- KEYS as RENEW; ARGV[1] = the asking member ('' for none), ARGV[2] = the sequences every
-- other member must have heard, ARGV[3] = 'evict' to take the lease of members that have not.
-- Forgets members whose lease ended. Returns {now, members still behind, members evicted by
-- this call, the latest end of their leases (0 for none)}.
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for _, member in ipairs(ended) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
end
local required = sequences(ARGV[2])
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local behind = 0
local evicted = 0
local evicted_until = 0
for i = 1, #members, 2 do
  local member = members[i]
  if member ~= ARGV[1] then
    local heard = sequences(redis.call('HGET', KEYS[2], member))
    local late = false
    for partition, seq in ipairs(required) do
      if (heard[partition] or 0) < seq then late = true end
    end
    if late then
      if ARGV[3] == 'evict' then
        redis.call('ZREM', KEYS[1], member)
        redis.call('HDEL', KEYS[2], member)
        evicted = evicted + 1
        evicted_until = math.max(evicted_until, tonumber(members[i + 1]))
      else
        behind = behind + 1
      end
    end
  end
end
return {now, behind, evicted, evicted_until}
