-- Give a seat back: a failed write (compensation), a cancellation, an
-- expired hold, a stopped clinic. Only the booking that holds the seat can
-- give it back, and only once, so a retried release never frees a seat twice.
--
-- KEYS[1] segment meta, KEYS[2] free seats, KEYS[3] seats left per pool,
-- KEYS[4] live holders, KEYS[5] the patient's day, KEYS[6] idempotency
-- record, KEYS[7] availability summary, KEYS[8] segment shares of it,
-- KEYS[9] the booking's referral (freed if this booking used it; a key
-- nothing writes for a booking without one)
-- ARGV[1] patient, ARGV[2] booking id, ARGV[3] "1" to put the seat back on
-- sale, "0" when PostgreSQL says the seat is really taken (Redis was stale)
-- or the schedule is stopped, ARGV[4] summary field, ARGV[5] segment id,
-- ARGV[6] "1" to keep the seat back for the schedule's waitlist (it is
-- free, but only a promotion can take it; counted in its pool's
-- `kept:<pool>`), ARGV[7] the city's seats channel, ARGV[8] the slot id
-- (a seat back in the free list is published: "free|<slot>", see hold.lua)
-- Returns 1 if released, 0 if there was nothing to release.
local held = redis.call('HGET', KEYS[4], ARGV[1])
if not held then
  return 0
end
local booking, pool, seat = string.match(held, '^([^|]+)|([^|]+)|([^|]+)$')
if booking ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HGET', KEYS[9], 'used_by') == ARGV[2] then
  redis.call('HDEL', KEYS[9], 'used_by')
end
if redis.call('GET', KEYS[6]) == ARGV[2] then
  redis.call('DEL', KEYS[6])
end
local meta = redis.call('HMGET', KEYS[1], 'schedule', 'dept')
if meta[1] then
  for _, field in ipairs({'total', 'dept:' .. meta[2], 'sch:' .. meta[1]}) do
    if tonumber(redis.call('HGET', KEYS[5], field) or '0') > 0 then
      redis.call('HINCRBY', KEYS[5], field, -1)
    end
  end
end
if ARGV[3] == '1' and meta[1] then
  -- Back to the front: the next patient gets the earliest seat.
  redis.call('LPUSH', KEYS[2], seat)
  redis.call('PUBLISH', ARGV[7], 'free|' .. ARGV[8])
  redis.call('HINCRBY', KEYS[3], pool, 1)
  if ARGV[6] == '1' then
    redis.call('HINCRBY', KEYS[1], 'kept:' .. pool, 1)
  else
    redis.call('HINCRBY', KEYS[7], ARGV[4], 1)
    redis.call('HINCRBY', KEYS[8], ARGV[5], 1)
  end
end
return 1
