-- The waitlist is empty: put a segment's kept-back seats on open sale.
--
-- KEYS[1] segment meta, KEYS[2] availability summary of the date,
-- KEYS[3] segment shares of it
-- ARGV[1] summary field, ARGV[2] segment id
-- Returns how many seats were put on sale.
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if reserved <= 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'reserved', 0)
redis.call('HINCRBY', KEYS[2], ARGV[1], reserved)
redis.call('HINCRBY', KEYS[3], ARGV[2], reserved)
return reserved
