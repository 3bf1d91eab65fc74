-- ARGV[3] = tag key prefix, ARGV[4] = stamp TTL, ARGV[5..n-1] = tags, ARGV[n] = the commit's
-- WAL position ('' for none). Advances the sequence, stamps every tag, raises the position
-- (a max, compared as text) and announces `<seq> <tags...>` to first tiers.
floor()
local seq = redis.call('INCR', KEYS[1])
local last = #ARGV - 1
for i = 5, last do
  redis.call('SET', ARGV[3] .. ARGV[i], text(seq), 'EX', tonumber(ARGV[4]))
end
local lsn = ARGV[#ARGV]
if lsn ~= '' then
  local current = position()
  if current == '' or #lsn > #current or (#lsn == #current and lsn > current) then
    redis.call('SET', KEYS[3], lsn)
  end
end
redis.call('PUBLISH', ARGV[2], text(seq) .. ' ' .. table.concat(ARGV, ' ', 5, last))
return text(seq)
