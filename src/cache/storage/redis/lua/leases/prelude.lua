-- Shared by the scripts: Redis's clock in milliseconds, and a list of sequences from text.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function sequences(text)
  local list = {}
  for word in string.gmatch(text or '', '[^,]+') do list[#list + 1] = tonumber(word) end
  return list
end
