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
-- KEYS[10] the schedule's lottery entries (hash: patient -> entry JSON)
-- KEYS[11] the referral named (hash: patient, dept, expires_at, used_by;
--         see booking/referral.rs), or a key nothing writes
-- ARGV[1] patient, ARGV[2] new booking id, ARGV[3] idempotency TTL (s),
-- ARGV[4] now (unix s), ARGV[5] channel, ARGV[6] max bookings per day,
-- ARGV[7] max per department per day, ARGV[8] TTL of the patient's day (s),
-- ARGV[9] summary field, ARGV[10] segment id, ARGV[11] what the attempt
-- is: "book" (a patient's own), "promote" (a waitlisted patient handed a
-- seat), "offer" (a priority hold after 停诊), ARGV[12] the city's seats
-- channel (pub/sub), ARGV[13] the segment's public slot id, ARGV[14] the
-- entry (JSON) recorded if this is a "book" attempt in a lottery's window
--
-- A lottery schedule not drawn yet (meta `lottery` = 1) takes no
-- first-come hold: in its window (until `lottery_until`) a "book" attempt
-- that passes the per-person rules records the patient's entry, once
-- (a second press answers the first entry); after the window it is refused
-- until the draw is done (the draw reloads the segment with `lottery` = 0).
-- The draw's own attempts ("draw") take seats as "book" would.
--
-- ARGV[15] "1" when the patient is signed with the family doctor team of
-- the schedule's doctor (家庭医生签约): the `signed` pool is theirs first
--
-- The `referral` channel must name a referral of this patient for the
-- segment's department, unexpired at `now` and unused; the seat and the
-- referral's use (`used_by` = the new booking) are one step, and
-- release.lua frees the referral with the seat.
--
-- When the segment has no seat left at all (its free list is empty),
-- "sold|<slot>" is published on the seats channel, so the gateways answer
-- its next attempts themselves (services/gateway/src/soldout.rs). When a
-- "book" attempt before the merge time finds nothing on offer for its
-- channel (the channel's pool and common empty, and no `signed` seat for
-- a signed resident either) while other pools still have seats,
-- "sold|<slot>|<channel>|<merge_at>" is published: that channel's attempts
-- are answered by the gateways until the merge time (a pool nobody books
-- through, referral say, would otherwise keep every loser of the segment
-- hopping to the hospital all day). Every script that gives a seat back or
-- puts one on offer publishes "free|<slot>" after it, which clears both
-- kinds of mark. All come from scripts on the segment's own slot, so a
-- subscriber sees them in the order they happened.
--
-- Seats kept back for the schedule's waitlist are counted per pool in the
-- meta fields `kept:<pool>` (never more than that pool's seats left). A
-- pool's seats on offer are its seats left less its kept ones. Which seats
-- an attempt may take (see booking/waitlist.rs for the whole rule):
--   book     on offer: `signed` (a signed resident of the doctor's team),
--            the channel's pool, then common; after the merge time, any
--            pool (the one with most)
--   promote  the same pools as the waiter's own booking, kept seats first
--            (own, common, after the merge any), then seats on offer: so an
--            unsold seat of another channel's pool (referral, say) never
--            goes to the line before the merge
--   offer    on offer: the channel's pool, then common, then any pool at
--            any time (the patient was stopped; seats kept for another
--            schedule's line stay with that line)
--
-- Returns {outcome, ...}:
--   {"REPLAY", booking}  {"NOT_LOADED"}  {"NOT_YET_RELEASED", release_at}
--   {"SCHEDULE_STOPPED"} {"ALREADY_BOOKED", holder}  {"SAME_SCHEDULE"}
--   {"DEPARTMENT_LIMIT"} {"DAILY_LIMIT"} {"SOLD_OUT"}
--   {"REFERRAL_UNKNOWN"} {"REFERRAL_OF_ANOTHER_PATIENT"}
--   {"REFERRAL_NOT_FOR_DEPARTMENT"} {"REFERRAL_EXPIRED"} {"REFERRAL_USED"}
--   {"HELD", seat, pool, visit number}
--   {"ENTERED", entry JSON, 1 new | 0 already entered, lottery_until}
--   {"DRAW_PENDING", lottery_until}
local prior = redis.call('GET', KEYS[6])
if prior then
  return {'REPLAY', prior}
end
-- With the seats the line keeps in the pools an attempt of this channel
-- looks at first (8 to 10), so that `kept` asks Redis only for another.
local meta = redis.call('HMGET', KEYS[1], 'schedule', 'dept', 'release_at', 'merge_at', 'open',
  'lottery', 'lottery_until', 'kept:' .. ARGV[5], 'kept:common', 'kept:signed')
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
-- The patient's day in one read: this schedule, the department, in all.
local day = redis.call('HMGET', KEYS[5], 'sch:' .. meta[1], 'dept:' .. meta[2], 'total')
local function count(i)
  return tonumber(day[i] or '0')
end
if count(1) > 0 then
  return {'SAME_SCHEDULE'}
end
if count(2) >= tonumber(ARGV[7]) then
  return {'DEPARTMENT_LIMIT'}
end
if count(3) >= tonumber(ARGV[6]) then
  return {'DAILY_LIMIT'}
end
local referred = ARGV[5] == 'referral'
if referred then
  local r = redis.call('HMGET', KEYS[11], 'patient', 'dept', 'expires_at', 'used_by')
  if not r[1] then
    return {'REFERRAL_UNKNOWN'}
  end
  if r[1] ~= ARGV[1] then
    return {'REFERRAL_OF_ANOTHER_PATIENT'}
  end
  if r[2] ~= meta[2] then
    return {'REFERRAL_NOT_FOR_DEPARTMENT'}
  end
  if now >= tonumber(r[3]) then
    return {'REFERRAL_EXPIRED'}
  end
  if r[4] and r[4] ~= '' then
    return {'REFERRAL_USED'}
  end
end

local mode = ARGV[11]
if mode == 'book' and meta[6] == '1' then
  if now >= tonumber(meta[7]) then
    return {'DRAW_PENDING', meta[7]}
  end
  local entered = redis.call('HGET', KEYS[10], ARGV[1])
  if entered then
    return {'ENTERED', entered, '0', meta[7]}
  end
  redis.call('HSET', KEYS[10], ARGV[1], ARGV[14])
  redis.call('EXPIRE', KEYS[10], tonumber(ARGV[8]))
  return {'ENTERED', ARGV[14], '1', meta[7]}
end

-- The surge's common answer, before any pool is looked at. Published
-- again, so a gateway that started after the last seat went learns it.
-- (The count also tells, below, whether the seat taken is the last.)
local free = redis.call('LLEN', KEYS[2])
if free == 0 then
  redis.call('PUBLISH', ARGV[12], 'sold|' .. ARGV[13])
  return {'SOLD_OUT'}
end
local merged = now >= tonumber(meta[4])
-- A pool's count in hash `key` (field `prefix .. pool`): the pools an
-- attempt of this channel looks at first were read up front (`read`,
-- false when absent), any other is asked of Redis when needed.
local function counts(key, prefix, read)
  return function(p)
    local n = read[p]
    if n == nil then
      n = redis.call('HGET', key, prefix .. p)
    end
    return tonumber(n or '0')
  end
end
local own = redis.call('HMGET', KEYS[3], ARGV[5], 'common', 'signed')
local left = counts(KEYS[3], '', {[ARGV[5]] = own[1], common = own[2], signed = own[3]})
local kept = counts(KEYS[1], 'kept:', {[ARGV[5]] = meta[8], common = meta[9], signed = meta[10]})
local function on_offer(p)
  return left(p) - kept(p)
end
-- (A signed resident's `signed`,) the channel's pool, then common; with
-- `any`, then the pool with most.
local own_pools = {ARGV[5], 'common'}
if ARGV[15] == '1' and mode == 'book' then
  own_pools = {'signed', ARGV[5], 'common'}
end
local function pick(seats, any)
  for _, p in ipairs(own_pools) do
    if seats(p) > 0 then
      return p
    end
  end
  if not any then
    return nil
  end
  local best, most = nil, 0
  local pools = redis.call('HKEYS', KEYS[3])
  for _, p in ipairs(pools) do
    local n = seats(p)
    if n > most then
      best, most = p, n
    end
  end
  return best
end

local pool, from_kept = nil, false
if mode == 'promote' then
  pool = pick(kept, merged)
  from_kept = pool ~= nil
  if not pool then
    pool = pick(on_offer, merged)
  end
elseif mode == 'offer' then
  pool = pick(on_offer, true)
else
  pool = pick(on_offer, merged)
end
if not pool then
  if mode == 'book' and not merged and on_offer('signed') <= 0 then
    redis.call('PUBLISH', ARGV[12], 'sold|' .. ARGV[13] .. '|' .. ARGV[5] .. '|' .. meta[4])
  end
  return {'SOLD_OUT'}
end
local seat = redis.call('LPOP', KEYS[2])
if not seat then
  return {'SOLD_OUT'}
end
if free == 1 then
  redis.call('PUBLISH', ARGV[12], 'sold|' .. ARGV[13])
end

redis.call('HINCRBY', KEYS[3], pool, -1)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. '|' .. pool .. '|' .. seat)
redis.call('HINCRBY', KEYS[5], 'total', 1)
redis.call('HINCRBY', KEYS[5], 'dept:' .. meta[2], 1)
redis.call('HINCRBY', KEYS[5], 'sch:' .. meta[1], 1)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[8]))
local visit = redis.call('INCR', KEYS[7])
if from_kept then
  -- A kept-back seat was never counted as available.
  redis.call('HINCRBY', KEYS[1], 'kept:' .. pool, -1)
else
  redis.call('HINCRBY', KEYS[8], ARGV[9], -1)
  redis.call('HINCRBY', KEYS[9], ARGV[10], -1)
end
if referred then
  redis.call('HSET', KEYS[11], 'used_by', ARGV[2])
end
redis.call('SET', KEYS[6], ARGV[2], 'EX', tonumber(ARGV[3]))
return {'HELD', seat, pool, tostring(visit)}
