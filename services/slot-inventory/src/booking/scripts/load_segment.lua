-- Load one segment's state from a PostgreSQL snapshot, unless another
-- instance loaded it first (then nothing changes: holds taken since must
-- not be overwritten).
--
-- KEYS[1] segment meta, KEYS[2] free seats, KEYS[3] seats left per pool,
-- KEYS[4] live holders, KEYS[5] the schedule's visit-number counter,
-- KEYS[6] availability summary of the date, KEYS[7] segment shares of it
-- ARGV[1] TTL in seconds, ARGV[2] summary field, ARGV[3] segment id,
-- ARGV[4] highest visit number in PostgreSQL, ARGV[5] the city's seats
-- channel, ARGV[6] the slot id ("free|<slot>" is published once loaded: a
-- reload after 加号 or a capacity change clears the gateways' marks),
-- ARGV[7] number of meta field/value pairs m, then the pairs,
-- then the number of pools p and p (pool, n) pairs,
-- then the number of free seats n and the seats in order,
-- then (patient, "booking|pool|seat") pairs for live bookings.
-- Returns 1 if loaded, 0 if it was already there.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local ttl = tonumber(ARGV[1])
local i = 7
local function take()
  local v = ARGV[i]
  i = i + 1
  return v
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])

local m = tonumber(take())
for _ = 1, m do
  redis.call('HSET', KEYS[1], take(), take())
end
local p = tonumber(take())
for _ = 1, p do
  redis.call('HSET', KEYS[3], take(), take())
end
local n = tonumber(take())
local first = i
-- RPUSH in chunks: Lua's unpack has a stack limit.
while i < first + n do
  local last = math.min(i + 999, first + n - 1)
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, last))
  i = last + 1
end
while i + 1 <= #ARGV do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end

-- Visit numbers continue after the highest one PostgreSQL knows.
local highest = tonumber(ARGV[4])
if tonumber(redis.call('GET', KEYS[5]) or '0') < highest then
  redis.call('SET', KEYS[5], highest)
end
-- Replace this segment's share of the date's summary (seats kept back for
-- the waitlist, the meta fields `kept:<pool>`, are not on offer).
local on_offer = n
local fields = redis.call('HGETALL', KEYS[1])
for f = 1, #fields, 2 do
  if string.sub(fields[f], 1, 5) == 'kept:' then
    on_offer = on_offer - tonumber(fields[f + 1])
  end
end
local before = tonumber(redis.call('HGET', KEYS[7], ARGV[3]) or '0')
redis.call('HINCRBY', KEYS[6], ARGV[2], on_offer - before)
redis.call('HSET', KEYS[7], ARGV[3], on_offer)
for k = 1, 7 do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('EXPIRE', KEYS[k], ttl)
  end
end
if n > 0 then
  redis.call('PUBLISH', ARGV[5], 'free|' .. ARGV[6])
else
  redis.call('PUBLISH', ARGV[5], 'sold|' .. ARGV[6])
end
return 1
