-- Every script starts with this: the epoch floor. Entries filled below it are unprovable (the
-- bookkeeping that could prove them fresh may be gone). When the floor key is missing (Redis
-- restarted empty, `cache clear`, eviction) a new epoch starts above every sequence handed out
-- (the client passes its clock in microseconds, so the sequence never goes backwards even when
-- its own key was lost) and first tiers are told to drop everything (`<seq> *`).
-- The WAL position (KEYS[3]) is the highest primary LSN an invalidation recorded, kept as
-- decimal text and compared as text (exact beyond 2^53). A new epoch deletes it: a restored
-- snapshot may hold an older one, and a missing one makes fills establish it from the primary.
-- KEYS[1] = sequence, KEYS[2] = floor, KEYS[3] = WAL position; ARGV[1] = clock (µs),
-- ARGV[2] = channel.
local function text(number) return string.format('%.0f', number) end
local function position() return redis.call('GET', KEYS[3]) or '' end
local function new_epoch()
  local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1])) + 1
  redis.call('SET', KEYS[1], text(start))
  redis.call('SET', KEYS[2], text(start))
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', ARGV[2], text(start) .. ' *')
  return start
end
local function floor()
  local current = redis.call('GET', KEYS[2])
  if current then return tonumber(current) end
  return new_epoch()
end
