-- Take one seat from a time segment for a patient, atomically: release
-- time, schedule open, per-person rules, channel pool and a free seat are
-- all decided here in one round trip. Losers are answered from Redis alone
-- and never reach PostgreSQL.
--
-- KEYS[1] segment meta (hash; present once the segment is loaded)
-- KEYS[2] free seat numbers (list)
-- KEYS[3] seats left per pool (hash: pool -> n)
-- KEYS[4] live holders (hash: patient -> "booking|pool|seat")
-- KEYS[5] the patient's day at this hospital (hash: total, dept:<d>, sch:<s>)
-- KEYS[6] the request's idempotency record (string: booking id)
-- KEYS[7] the schedule's visit-number counter
-- KEYS[8] availability summary of the date (hash: "<dept>|<level>" -> n)
-- KEYS[9] each segment's share of that summary (hash: segment -> n)
-- ARGV[1] patient, ARGV[2] new booking id, ARGV[3] idempotency TTL (s),
-- ARGV[4] now (unix s), ARGV[5] channel, ARGV[6] max bookings per day,
-- ARGV[7] max per department per day, ARGV[8] TTL of the patient's day (s),
-- ARGV[9] summary field, ARGV[10] segment id, ARGV[11] "promote" when a
-- waitlisted patient is handed a seat (any pool, reserved seats first),
-- "book" otherwise
--
-- Seats freed while a schedule has a waitlist are kept back for it: the
-- meta field `reserved` counts them, and an ordinary booking sees only the
-- free seats beyond that count.
--
-- Returns {outcome, ...}:
--   {"REPLAY", booking}  {"NOT_LOADED"}  {"NOT_YET_RELEASED", release_at}
--   {"SCHEDULE_STOPPED"} {"ALREADY_BOOKED", holder}  {"SAME_SCHEDULE"}
--   {"DEPARTMENT_LIMIT"} {"DAILY_LIMIT"} {"SOLD_OUT"}
--   {"HELD", seat, pool, visit number}
local prior = redis.call('GET', KEYS[6])
if prior then
  return {'REPLAY', prior}
end
local meta = redis.call('HMGET', KEYS[1], 'schedule', 'dept', 'release_at', 'merge_at', 'open', 'reserved')
if not meta[1] then
  return {'NOT_LOADED'}
end
local now = tonumber(ARGV[4])
if now < tonumber(meta[3]) then
  return {'NOT_YET_RELEASED', meta[3]}
end
if meta[5] ~= '1' then
  return {'SCHEDULE_STOPPED'}
end
local existing = redis.call('HGET', KEYS[4], ARGV[1])
if existing then
  return {'ALREADY_BOOKED', existing}
end
local function count(field)
  return tonumber(redis.call('HGET', KEYS[5], field) or '0')
end
if count('sch:' .. meta[1]) > 0 then
  return {'SAME_SCHEDULE'}
end
if count('dept:' .. meta[2]) >= tonumber(ARGV[7]) then
  return {'DEPARTMENT_LIMIT'}
end
if count('total') >= tonumber(ARGV[6]) then
  return {'DAILY_LIMIT'}
end

local promote = ARGV[11] == 'promote'
local reserved = tonumber(meta[6] or '0')
if not promote and redis.call('LLEN', KEYS[2]) <= reserved then
  return {'SOLD_OUT'}
end

-- The channel's own pool first, then the common remainder; after the merge
-- time (or for a waitlist promotion) every pool's unused seats are open.
local pool = nil
if tonumber(redis.call('HGET', KEYS[3], ARGV[5]) or '0') > 0 then
  pool = ARGV[5]
elseif tonumber(redis.call('HGET', KEYS[3], 'common') or '0') > 0 then
  pool = 'common'
elseif promote or now >= tonumber(meta[4]) then
  local all = redis.call('HGETALL', KEYS[3])
  local most = 0
  for i = 1, #all, 2 do
    local n = tonumber(all[i + 1])
    if n > most then
      pool, most = all[i], n
    end
  end
end
if not pool then
  return {'SOLD_OUT'}
end
local seat = redis.call('LPOP', KEYS[2])
if not seat then
  return {'SOLD_OUT'}
end

redis.call('HINCRBY', KEYS[3], pool, -1)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. '|' .. pool .. '|' .. seat)
redis.call('HINCRBY', KEYS[5], 'total', 1)
redis.call('HINCRBY', KEYS[5], 'dept:' .. meta[2], 1)
redis.call('HINCRBY', KEYS[5], 'sch:' .. meta[1], 1)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[8]))
local visit = redis.call('INCR', KEYS[7])
if promote and reserved > 0 then
  -- A kept-back seat was never counted as available.
  redis.call('HINCRBY', KEYS[1], 'reserved', -1)
else
  redis.call('HINCRBY', KEYS[8], ARGV[9], -1)
  redis.call('HINCRBY', KEYS[9], ARGV[10], -1)
end
redis.call('SET', KEYS[6], ARGV[2], 'EX', tonumber(ARGV[3]))
return {'HELD', seat, pool, tostring(visit)}
