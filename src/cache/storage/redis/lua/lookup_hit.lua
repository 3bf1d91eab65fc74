-- Both layouts' lookup scripts start with this hit path, which differs only in where the entry
-- and the stamps are: the four names in capitals are filled in per layout when the scripts are
-- built (`scripts.rs`). Read the entry, take its fill sequence and tags from its first line,
-- read the epoch floor (`values[1]`) and the tags' stamps in one call, and return a fresh
-- entry; anything else falls through to the miss path (`lookup_miss.lua`, after the epoch
-- helpers: a hit never defines them).
local entry = redis.call('GET', ENTRY_KEY)
local unprovable = false
if entry then
  local newline = string.find(entry, '\n', 1, true)
  if newline then
    local seq = nil
    local names = {FLOOR_NAME}
    for word in string.gmatch(string.sub(entry, 1, newline - 1), '%S+') do
      if seq == nil then seq = tonumber(word) else names[#names + 1] = STAMP_NAME end
    end
    local values = READ_STAMPS
    local lowest = values[1] and tonumber(values[1])
    if seq == nil or lowest == nil or seq < lowest then
      unprovable = true
    else
      local fresh = true
      for i = 2, #values do
        if values[i] and tonumber(values[i]) > seq then fresh = false break end
      end
      if fresh then return {1, entry, ''} end
    end
  end
end
