//! The surge lock: each segment's free seats, pool counts and live holders
//! in Redis, plus each patient's day at this hospital, the schedules' visit
//! numbers and the availability summaries, changed only by the Lua scripts
//! beside this file. Every key of one hospital shares the hash tag
//! `{h:<hospital>}`, so each script touches one Redis Cluster slot.

use std::sync::Arc;

use chrono::NaiveDate;
use jyt_cache::redis::{RedisResult, Script};
use jyt_cache::{Keyspace, RedisConn};
use jyt_domain::{Channel, HospitalId, IdempotencyKey};
use uuid::Uuid;

use super::queries::SegmentInfo;
use crate::policy::Policy;

/// Builds this hospital's keys. Every hop to a hospital builds a
/// segment's dozen keys, so they are concatenated onto a head made once,
/// not formatted twice each (`format!` into a string, then into the
/// tagged key: 8 % of the hospitals' samples in a bookings phase).
#[derive(Debug, Clone)]
pub struct HospitalKeys {
    keyspace: Keyspace,
    hospital: String,
    /// `<prefix>:{h:<hospital>}:`, what [`Keyspace::tagged`] puts before
    /// every key of this hospital.
    head: String,
    /// The city's pub/sub channel of sold-out and freed segments.
    seats_channel: String,
}

/// The keys one segment's scripts touch.
#[derive(Debug, Clone)]
pub struct SegmentKeys {
    pub meta: String,
    pub free: String,
    pub pools: String,
    pub holders: String,
    pub visit_numbers: String,
    pub availability: String,
    pub availability_shares: String,
    /// `<department>|<clinic level>`: this segment's field in the summary.
    pub availability_field: String,
    pub segment: Uuid,
    /// The city's pub/sub channel of sold-out and freed segments.
    pub seats_channel: String,
    /// `<hospital>-<segment>`: the segment's public slot id.
    pub slot: String,
    /// The schedule's lottery entries (patient → entry JSON).
    pub lottery_entries: String,
}

impl HospitalKeys {
    pub fn new(keyspace: Keyspace, hospital: &HospitalId) -> Self {
        let tag = jyt_cache::hospital::tag(hospital.as_str());
        Self {
            head: keyspace.tagged(&tag, ""),
            seats_channel: jyt_cache::hospital::seats_channel(&keyspace),
            keyspace,
            hospital: hospital.to_string(),
        }
    }

    fn key(&self, rest: &str) -> String {
        self.key_of(&[rest])
    }

    /// The key whose name after the head is `parts`, concatenated.
    fn key_of(&self, parts: &[&str]) -> String {
        let len = self.head.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.head);
        for part in parts {
            key.push_str(part);
        }
        key
    }

    pub fn segment(&self, info: &SegmentInfo) -> SegmentKeys {
        let seg = info.segment_id;
        let mut seg_buf = Uuid::encode_buffer();
        let seg_text = seg.hyphenated().encode_lower(&mut seg_buf);
        let mut schedule_buf = Uuid::encode_buffer();
        let schedule = info.schedule_id.hyphenated().encode_lower(&mut schedule_buf);
        let date = info.visit_date.format("%Y-%m-%d").to_string();
        SegmentKeys {
            meta: self.segment_part(seg_text, "meta"),
            free: self.segment_part(seg_text, "free"),
            pools: self.segment_part(seg_text, "pools"),
            holders: self.segment_part(seg_text, "holders"),
            visit_numbers: self.key_of(&["sch:", schedule, ":visit"]),
            availability: self.key_of(&[jyt_cache::hospital::AVAILABILITY, &date]),
            availability_shares: self.key_of(&["avail-seg:", &date]),
            availability_field: jyt_cache::hospital::availability_field(&info.department, &info.clinic_level),
            segment: seg,
            seats_channel: self.seats_channel.clone(),
            slot: self.slot_of(seg_text),
            lottery_entries: self.lottery_entries_of(schedule),
        }
    }

    /// `seg:<segment>:<part>`, the segment as its hyphenated text.
    fn segment_part(&self, segment: &str, part: &str) -> String {
        self.key_of(&["seg:", segment, ":", part])
    }

    /// A lottery schedule's entries in its window (patient → entry JSON).
    pub fn lottery_entries(&self, schedule: Uuid) -> String {
        with_text(schedule, |schedule| self.lottery_entries_of(schedule))
    }

    fn lottery_entries_of(&self, schedule: &str) -> String {
        self.key_of(&["sch:", schedule, ":lottery"])
    }

    /// The city's pub/sub channel of sold-out and freed segments, read by
    /// every gateway replica (`jyt_cache::hospital::seats_channel`).
    pub fn seats_channel(&self) -> String {
        self.seats_channel.clone()
    }

    /// `<hospital>-<segment>`.
    pub fn slot(&self, segment: Uuid) -> String {
        with_text(segment, |segment| self.slot_of(segment))
    }

    fn slot_of(&self, segment: &str) -> String {
        [self.hospital.as_str(), "-", segment].concat()
    }

    /// The segment-only keys, for forgetting a segment.
    pub fn segment_own(&self, segment: Uuid) -> [String; 4] {
        with_text(segment, |segment| {
            ["meta", "free", "pools", "holders"].map(|part| self.segment_part(segment, part))
        })
    }

    /// `<prefix>:{h:<id>}:avail:<date>`: remaining seats by
    /// `<department>|<level>`, read by the gateway's city-wide search.
    pub fn availability(&self, date: NaiveDate) -> String {
        jyt_cache::hospital::availability(&self.keyspace, &self.hospital, date)
    }

    /// Department id → name, for the search's answers.
    pub fn departments(&self) -> String {
        jyt_cache::hospital::departments(&self.keyspace, &self.hospital)
    }

    /// A patient's bookings at this hospital on one visit date.
    pub fn patient_day(&self, patient: Uuid, date: NaiveDate) -> String {
        let date = date.format("%Y-%m-%d").to_string();
        with_text(patient, |patient| self.key_of(&["person:", patient, ":", &date]))
    }

    /// Scoped by patient: keys are the client's, and two patients' clients
    /// may well pick the same one.
    pub fn idempotency(&self, patient: Uuid, key: &IdempotencyKey) -> String {
        with_text(patient, |patient| {
            self.key_of(&["idem:", patient, ":", key.as_str()])
        })
    }

    /// A key nothing writes, for releases that have no idempotency record.
    pub fn no_idempotency(&self) -> String {
        self.key("idem:none")
    }

    /// Set after a full rebuild; its absence means Redis lost our state.
    pub fn generation(&self) -> String {
        self.key("generation")
    }

    /// A referral issued to this hospital (see `booking::referral`); with
    /// none, a key nothing writes, so the scripts always get a key.
    pub fn referral(&self, id: Option<Uuid>) -> String {
        match id {
            Some(id) => self.key(&format!("referral:{id}")),
            None => self.key("referral:none"),
        }
    }

    /// Unpaid holds by deadline (sorted set), driving the expiry sweeper.
    pub fn holds(&self) -> String {
        self.key("holds")
    }
}

/// `id`'s hyphenated lower-case text, encoded on the stack, handed to `f`:
/// a key is built without formatting the UUID into a string of its own.
fn with_text<R>(id: Uuid, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = Uuid::encode_buffer();
    f(id.hyphenated().encode_lower(&mut buf))
}

/// What the hold script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    Held {
        seat: i32,
        pool: String,
        visit_no: i32,
    },
    SoldOut,
    NotLoaded,
    NotYetReleased {
        release_at: i64,
    },
    ScheduleStopped,
    AlreadyBooked {
        booking_id: Uuid,
    },
    SameSchedule,
    DepartmentLimit,
    DailyLimit,
    Replay {
        booking_id: Uuid,
    },
    /// A lottery's window: the patient's entry (JSON), `new` on the first press.
    Entered {
        entry: String,
        new: bool,
        closes_at: i64,
    },
    /// A lottery's window has closed and its draw is not done.
    DrawPending {
        closes_at: i64,
    },
    Referral(super::referral::Refusal),
}

/// Where a released seat goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatGoes {
    /// Back on open sale.
    OnSale,
    /// Kept back for the schedule's waitlist.
    Waitlist,
    /// Nowhere: PostgreSQL says it is taken, or the schedule is stopped.
    Nowhere,
}

/// A seat the hold script gave to a patient's new booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSeat {
    pub patient: Uuid,
    pub booking_id: Uuid,
}

/// One hold attempt's inputs besides the keys.
#[derive(Debug, Clone)]
pub struct HoldRequest<'a> {
    pub patient: Uuid,
    pub booking_id: Uuid,
    pub channel: Channel,
    pub now: i64,
    pub idempotency_key: &'a str,
    pub idempotency_ttl_seconds: u64,
    pub patient_day: &'a str,
    pub max_per_day: u32,
    pub max_per_department: u32,
    pub patient_day_ttl_seconds: i64,
    /// Which seats the attempt may take.
    pub kind: HoldKind,
    /// The entry (JSON) recorded if the attempt falls in a lottery's window.
    pub lottery_entry: &'a str,
    /// The referral's key ([`HospitalKeys::referral`]): checked and marked
    /// used in the same step as the seat for the `referral` channel.
    pub referral_key: &'a str,
    /// The patient is signed with the team of the schedule's doctor: the
    /// `signed` pool is theirs first.
    pub signed_pool: bool,
}

/// What a hold attempt is: it decides which pools and which seats (on
/// offer, or kept back for the waitlist) it may take; the rule in full is in
/// `scripts/hold.lua` and [`super::waitlist`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    /// A patient's own booking: seats on offer, their channel's pool then
    /// common (any pool after the merge time).
    Book,
    /// A waitlisted patient handed a seat: the pools of their own booking,
    /// seats kept back for the line first.
    Promote,
    /// A priority hold after 停诊: seats on offer of any pool, any time.
    Offer,
    /// A lottery winner's hold, given by the draw: as `Book`, but past the
    /// lottery's gate.
    Draw,
}

impl HoldKind {
    fn as_str(self) -> &'static str {
        match self {
            HoldKind::Book => "book",
            HoldKind::Promote => "promote",
            HoldKind::Offer => "offer",
            HoldKind::Draw => "draw",
        }
    }
}

/// Seats left per pool of a segment of `capacity` seats with `free` of them
/// free, whose live bookings drew from the pools `used` (one per booking):
/// each pool's share less what its bookings took; seats of a pool overdrawn
/// (capacity lowered) come out of common. Pools must add up to the free
/// seats; when they cannot (a capacity cut below the bookings) nothing is
/// on sale. Redis is loaded with these, and a waitlist join is decided on
/// them, so both count alike.
pub fn pools_left<'a>(
    policy: &Policy,
    capacity: i32,
    free: usize,
    used: impl Iterator<Item = &'a str> + Clone,
) -> Vec<(String, i32)> {
    let mut pools: Vec<(String, i32)> = policy
        .pool_split(capacity)
        .into_iter()
        .map(|(pool, n)| {
            let taken = used.clone().filter(|p| *p == pool).count();
            (pool.to_owned(), n - i32::try_from(taken).unwrap_or(i32::MAX))
        })
        .collect();
    let overdrawn: i32 = pools.iter().filter(|(_, n)| *n < 0).map(|(_, n)| -n).sum();
    for (pool, n) in &mut pools {
        if *n < 0 {
            *n = 0;
        } else if pool == "common" {
            *n -= overdrawn;
        }
    }
    let on_sale: i32 = pools.iter().map(|(_, n)| (*n).max(0)).sum();
    if on_sale != i32::try_from(free).unwrap_or(0) {
        for (_, n) in &mut pools {
            *n = 0;
        }
    }
    pools
}

/// Whether a patient booking through `channel` may take a seat of `pool`
/// (before the merge time: their channel's pool or common; after it, any).
pub fn may_take(pool: &str, channel: Channel, merged: bool) -> bool {
    merged || pool == "common" || pool == channel.as_str()
}

/// The seats a segment loaded from PostgreSQL keeps back for its
/// schedule's waitlist, as `kept:<pool>` meta fields: free seats the
/// waiting patients (`waiting` of them, through `channels`) could take, at
/// most one each, common first. A seat freed for the line while Redis was
/// away is thus kept for it again; unsold seats of pools no waiting
/// patient may take are not.
pub fn kept_for_line(
    pools: &[(String, i32)],
    waiting: usize,
    channels: &[Channel],
    merged: bool,
) -> Vec<(String, String)> {
    let mut left = i32::try_from(waiting).unwrap_or(i32::MAX);
    let common_first = pools
        .iter()
        .filter(|(p, _)| p == "common")
        .chain(pools.iter().filter(|(p, _)| p != "common"));
    let mut kept = Vec::new();
    for (pool, n) in common_first {
        let usable = channels.iter().any(|c| may_take(pool, *c, merged));
        let k = if usable { (*n).min(left).max(0) } else { 0 };
        left -= k;
        kept.push((format!("kept:{pool}"), k.to_string()));
    }
    kept
}

/// The scripts, loaded once (EVALSHA, falling back to EVAL after a Redis restart).
#[derive(Clone)]
pub struct HoldScripts {
    hold: Arc<Script>,
    release: Arc<Script>,
    load: Arc<Script>,
    unreserve: Arc<Script>,
    forget: Arc<Script>,
    withdraw_above: Arc<Script>,
}

/// Forget a segment's Redis copy (its four own keys) and tell the gateways
/// its seats may be back ("free|<slot>"), in one script on the segment's
/// slot so the notice cannot overtake an earlier "sold" (see hold.lua).
/// KEYS the segment's own keys; ARGV[1] the seats channel, ARGV[2] the slot.
const FORGET: &str = r"
redis.call('DEL', unpack(KEYS))
redis.call('PUBLISH', ARGV[1], 'free|' .. ARGV[2])
return 1
";

/// Before a segment's capacity is lowered to ARGV[1]: the highest seat
/// above it that a holder has (a booking, or a hold whose write is still
/// in flight: `hold.lua` names the holder before PostgreSQL has the row),
/// and nothing changed; or 0, with every free seat above it taken off the
/// free list (its order kept), so no hold can take one before the lowering
/// commits and the segment is loaded again. KEYS[1] the free seats,
/// KEYS[2] the live holders (`booking|pool|seat`).
const WITHDRAW_ABOVE: &str = r"
local cap = tonumber(ARGV[1])
local highest = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
  local seat = tonumber(string.match(v, '|(%d+)$'))
  if seat and seat > cap and seat > highest then highest = seat end
end
if highest > 0 then return highest end
local free = redis.call('LRANGE', KEYS[1], 0, -1)
local kept = {}
for _, s in ipairs(free) do
  if tonumber(s) <= cap then kept[#kept + 1] = s end
end
if #kept < #free then
  redis.call('DEL', KEYS[1])
  -- RPUSH in chunks: Lua's unpack has a stack limit.
  for i = 1, #kept, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 999, #kept)))
  end
end
return 0
";

impl Default for HoldScripts {
    fn default() -> Self {
        Self {
            hold: Arc::new(Script::new(include_str!("scripts/hold.lua"))),
            release: Arc::new(Script::new(include_str!("scripts/release.lua"))),
            load: Arc::new(Script::new(include_str!("scripts/load_segment.lua"))),
            unreserve: Arc::new(Script::new(include_str!("scripts/unreserve.lua"))),
            forget: Arc::new(Script::new(FORGET)),
            withdraw_above: Arc::new(Script::new(WITHDRAW_ABOVE)),
        }
    }
}

/// A segment's state as PostgreSQL has it, ready to load into Redis.
#[derive(Debug, Clone)]
pub struct SegmentSnapshot {
    /// schedule, dept, release_at, merge_at, open, capacity, and
    /// `kept:<pool>` for seats kept back for the waitlist.
    pub meta: Vec<(String, String)>,
    pub pools: Vec<(String, i32)>,
    pub free_seats: Vec<i32>,
    /// (patient, "booking|pool|seat").
    pub holders: Vec<(Uuid, String)>,
    pub highest_visit_no: i32,
    pub ttl_seconds: i64,
}

impl HoldScripts {
    /// Load the scripts into Redis ahead of the first surge, so the first
    /// thousand attempts do not each find `NOSCRIPT` and resend the source.
    pub async fn preload(&self, redis: &RedisConn) -> RedisResult<()> {
        let mut conn = redis.clone();
        for script in [
            &self.hold,
            &self.release,
            &self.load,
            &self.unreserve,
            &self.forget,
        ] {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(())
    }

    /// A client span named by the database semantic conventions, so a
    /// booking's trace shows its Redis round trip.
    #[tracing::instrument(
        name = "EVALSHA hold.lua",
        skip_all,
        fields(otel.kind = "client", db.system = "redis", db.operation = "EVALSHA", db.redis.script = "hold.lua")
    )]
    pub async fn hold(
        &self,
        redis: &RedisConn,
        keys: &SegmentKeys,
        r: &HoldRequest<'_>,
    ) -> RedisResult<HoldOutcome> {
        let mut conn = redis.clone();
        let reply: Vec<String> = self
            .hold
            .key(&keys.meta)
            .key(&keys.free)
            .key(&keys.pools)
            .key(&keys.holders)
            .key(r.patient_day)
            .key(r.idempotency_key)
            .key(&keys.visit_numbers)
            .key(&keys.availability)
            .key(&keys.availability_shares)
            .key(&keys.lottery_entries)
            .key(r.referral_key)
            .arg(r.patient.to_string())
            .arg(r.booking_id.to_string())
            .arg(r.idempotency_ttl_seconds)
            .arg(r.now)
            .arg(r.channel.as_str())
            .arg(r.max_per_day)
            .arg(r.max_per_department)
            .arg(r.patient_day_ttl_seconds.max(60))
            .arg(&keys.availability_field)
            .arg(keys.segment.to_string())
            .arg(r.kind.as_str())
            .arg(&keys.seats_channel)
            .arg(&keys.slot)
            .arg(r.lottery_entry)
            .arg(if r.signed_pool { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(parse_outcome(&reply))
    }

    /// Give a hold back. `back_on_sale` is false when PostgreSQL says another
    /// live booking owns the seat, or the schedule is stopped; `Waitlist`
    /// keeps the freed seat back for the schedule's waitlist. The booking's
    /// referral (`referral_key`), if it used one, is free again.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per key and rule of the script"
    )]
    pub async fn release(
        &self,
        redis: &RedisConn,
        keys: &SegmentKeys,
        patient_day: &str,
        idempotency_key: &str,
        referral_key: &str,
        held: &HeldSeat,
        back_on_sale: SeatGoes,
    ) -> RedisResult<bool> {
        let mut conn = redis.clone();
        let released: i32 = self
            .release
            .key(&keys.meta)
            .key(&keys.free)
            .key(&keys.pools)
            .key(&keys.holders)
            .key(patient_day)
            .key(idempotency_key)
            .key(&keys.availability)
            .key(&keys.availability_shares)
            .key(referral_key)
            .arg(held.patient.to_string())
            .arg(held.booking_id.to_string())
            .arg(if back_on_sale == SeatGoes::Nowhere {
                "0"
            } else {
                "1"
            })
            .arg(&keys.availability_field)
            .arg(keys.segment.to_string())
            .arg(if back_on_sale == SeatGoes::Waitlist {
                "1"
            } else {
                "0"
            })
            .arg(&keys.seats_channel)
            .arg(&keys.slot)
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }

    /// Put a segment's seats kept back for the waitlist on sale, but for
    /// those of pools a patient still waiting (through one of `waiting`'s
    /// channels) could take; all of them when `waiting` is empty. Returns
    /// how many went on sale.
    pub async fn unreserve(
        &self,
        redis: &RedisConn,
        keys: &SegmentKeys,
        now: i64,
        waiting: &[Channel],
    ) -> RedisResult<i64> {
        let mut conn = redis.clone();
        let mut inv = self.unreserve.key(&keys.meta);
        inv.key(&keys.pools)
            .key(&keys.availability)
            .key(&keys.availability_shares)
            .arg(&keys.availability_field)
            .arg(keys.segment.to_string())
            .arg(now)
            .arg(&keys.seats_channel)
            .arg(&keys.slot);
        for channel in waiting {
            inv.arg(channel.as_str());
        }
        inv.invoke_async(&mut conn).await
    }

    /// [`WITHDRAW_ABOVE`]: `Some(seat)`, the highest seat above `capacity`
    /// that a holder has (nothing changed), or `None` with the free seats
    /// above it withdrawn until the segment is loaded again.
    pub async fn withdraw_above(
        &self,
        redis: &RedisConn,
        keys: &SegmentKeys,
        capacity: i32,
    ) -> RedisResult<Option<i32>> {
        let mut conn = redis.clone();
        let highest: i32 = self
            .withdraw_above
            .key(&keys.free)
            .key(&keys.holders)
            .arg(capacity)
            .invoke_async(&mut conn)
            .await?;
        Ok((highest > 0).then_some(highest))
    }

    /// Forget a segment's own keys (the next attempt loads it again) and
    /// clear the gateways' sold-out marks of it.
    pub async fn forget(&self, redis: &RedisConn, keys: &HospitalKeys, segment: Uuid) -> RedisResult<()> {
        let mut conn = redis.clone();
        let mut inv = self.forget.prepare_invoke();
        for key in keys.segment_own(segment) {
            inv.key(key);
        }
        inv.arg(keys.seats_channel())
            .arg(keys.slot(segment))
            .invoke_async::<()>(&mut conn)
            .await
    }

    /// Load a segment unless it is already loaded; true if this call loaded it.
    pub async fn load(
        &self,
        redis: &RedisConn,
        keys: &SegmentKeys,
        snap: &SegmentSnapshot,
    ) -> RedisResult<bool> {
        let mut conn = redis.clone();
        let mut inv = self.load.key(&keys.meta);
        inv.key(&keys.free)
            .key(&keys.pools)
            .key(&keys.holders)
            .key(&keys.visit_numbers)
            .key(&keys.availability)
            .key(&keys.availability_shares);
        inv.arg(snap.ttl_seconds.max(60))
            .arg(&keys.availability_field)
            .arg(keys.segment.to_string())
            .arg(snap.highest_visit_no)
            .arg(&keys.seats_channel)
            .arg(&keys.slot)
            .arg(snap.meta.len());
        for (field, value) in &snap.meta {
            inv.arg(field).arg(value);
        }
        inv.arg(snap.pools.len());
        for (pool, n) in &snap.pools {
            inv.arg(pool).arg(*n);
        }
        inv.arg(snap.free_seats.len());
        for seat in &snap.free_seats {
            inv.arg(*seat);
        }
        for (patient, held) in &snap.holders {
            inv.arg(patient.to_string()).arg(held);
        }
        let loaded: i32 = inv.invoke_async(&mut conn).await?;
        Ok(loaded == 1)
    }
}

fn parse_outcome(reply: &[String]) -> HoldOutcome {
    let at = |i: usize| reply.get(i).map(String::as_str).unwrap_or("");
    let booking_at = |i: usize| Uuid::parse_str(at(i).split('|').next().unwrap_or("")).ok();
    match at(0) {
        "HELD" => match (at(1).parse(), at(3).parse()) {
            (Ok(seat), Ok(visit_no)) => HoldOutcome::Held {
                seat,
                pool: at(2).to_owned(),
                visit_no,
            },
            _ => HoldOutcome::NotLoaded,
        },
        "SOLD_OUT" => HoldOutcome::SoldOut,
        "NOT_YET_RELEASED" => HoldOutcome::NotYetReleased {
            release_at: at(1).parse().unwrap_or(0),
        },
        "SCHEDULE_STOPPED" => HoldOutcome::ScheduleStopped,
        "SAME_SCHEDULE" => HoldOutcome::SameSchedule,
        "DEPARTMENT_LIMIT" => HoldOutcome::DepartmentLimit,
        "DAILY_LIMIT" => HoldOutcome::DailyLimit,
        "ALREADY_BOOKED" => booking_at(1).map_or(HoldOutcome::NotLoaded, |booking_id| {
            HoldOutcome::AlreadyBooked { booking_id }
        }),
        "ENTERED" => HoldOutcome::Entered {
            entry: at(1).to_owned(),
            new: at(2) == "1",
            closes_at: at(3).parse().unwrap_or(0),
        },
        "DRAW_PENDING" => HoldOutcome::DrawPending {
            closes_at: at(1).parse().unwrap_or(0),
        },
        "REPLAY" => booking_at(1).map_or(HoldOutcome::NotLoaded, |booking_id| HoldOutcome::Replay {
            booking_id,
        }),
        code if code.starts_with("REFERRAL_") => {
            super::referral::Refusal::from_code(code).map_or(HoldOutcome::NotLoaded, HoldOutcome::Referral)
        }
        // A reply we do not understand means the keys are not in a state
        // we wrote; treat the segment as not loaded, which reloads it.
        _ => HoldOutcome::NotLoaded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The concatenated keys are the ones the formatted layout names: the
    /// scripts, the cache's rebuild and the gateway's search all read them.
    #[test]
    fn a_segments_keys_are_the_tagged_keys_of_the_shared_layout() {
        let keyspace = Keyspace::new("jyt-test:abc".to_owned());
        let hospital: HospitalId = "pumch".parse().expect("a hospital id");
        let keys = HospitalKeys::new(keyspace.clone(), &hospital);
        let (segment, schedule) = (Uuid::now_v7(), Uuid::now_v7());
        let visit_date = NaiveDate::from_ymd_opt(2026, 1, 5).expect("a date");
        let info = SegmentInfo {
            segment_id: segment,
            schedule_id: schedule,
            department: "cardio".to_owned(),
            department_name: "心内科".to_owned(),
            clinic_level: "expert".to_owned(),
            visit_date,
            starts_at: chrono::Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap(),
            ends_at: chrono::Utc.with_ymd_and_hms(2026, 1, 5, 0, 30, 0).unwrap(),
        };
        let k = keys.segment(&info);
        let tagged = |rest: String| keyspace.tagged("h:pumch", &rest);
        assert_eq!(k.meta, tagged(format!("seg:{segment}:meta")));
        assert_eq!(k.free, tagged(format!("seg:{segment}:free")));
        assert_eq!(k.pools, tagged(format!("seg:{segment}:pools")));
        assert_eq!(k.holders, tagged(format!("seg:{segment}:holders")));
        assert_eq!(k.visit_numbers, tagged(format!("sch:{schedule}:visit")));
        assert_eq!(k.lottery_entries, tagged(format!("sch:{schedule}:lottery")));
        assert_eq!(k.availability_shares, tagged("avail-seg:2026-01-05".to_owned()));
        assert_eq!(
            k.availability,
            jyt_cache::hospital::availability(&keyspace, "pumch", visit_date)
        );
        assert_eq!(k.availability, keys.availability(visit_date));
        assert_eq!(k.seats_channel, jyt_cache::hospital::seats_channel(&keyspace));
        assert_eq!(k.slot, format!("pumch-{segment}"));
        assert_eq!(k.slot, keys.slot(segment));
        assert_eq!(k.lottery_entries, keys.lottery_entries(schedule));
        assert_eq!(keys.holds(), tagged("holds".to_owned()));
        let patient = Uuid::now_v7();
        assert_eq!(
            keys.patient_day(patient, visit_date),
            tagged(format!("person:{patient}:{visit_date}"))
        );
        let idem: IdempotencyKey = "b7c1-retry".parse().expect("a key");
        assert_eq!(
            keys.idempotency(patient, &idem),
            tagged(format!("idem:{patient}:b7c1-retry"))
        );
    }
}
