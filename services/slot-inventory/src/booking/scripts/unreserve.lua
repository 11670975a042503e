-- Put a segment's seats kept back for the waitlist on open sale, except
-- those of pools someone still waiting could take: the line emptied, or
-- its patients may not book these pools (another channel's, before the
-- merge time). Run at the end of each promotion pass.
--
-- KEYS[1] segment meta, KEYS[2] seats left per pool, KEYS[3] availability
-- summary of the date, KEYS[4] segment shares of it
-- ARGV[1] summary field, ARGV[2] segment id, ARGV[3] now (unix s),
-- ARGV[4] the city's seats channel, ARGV[5] the slot id (seats put on sale
-- are published: "free|<slot>" clears the gateways' marks, see hold.lua),
-- ARGV[6..] the channels of the patients still waiting (none: the line is
-- empty)
-- Returns how many seats were put on sale.
local merge_at = redis.call('HGET', KEYS[1], 'merge_at')
if not merge_at then
  return 0
end
local waiting = #ARGV >= 6
if waiting and tonumber(ARGV[3]) >= tonumber(merge_at) then
  -- After the merge a waiting patient may take any pool's seat.
  return 0
end
local usable = {}
if waiting then
  usable['common'] = true
  for i = 6, #ARGV do
    usable[ARGV[i]] = true
  end
end
local freed = 0
for _, pool in ipairs(redis.call('HKEYS', KEYS[2])) do
  local n = tonumber(redis.call('HGET', KEYS[1], 'kept:' .. pool) or '0')
  if n > 0 and not usable[pool] then
    redis.call('HSET', KEYS[1], 'kept:' .. pool, 0)
    freed = freed + n
  end
end
if freed > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[1], freed)
  redis.call('HINCRBY', KEYS[4], ARGV[2], freed)
  redis.call('PUBLISH', ARGV[4], 'free|' .. ARGV[5])
end
return freed
