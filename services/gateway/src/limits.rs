//! Rate limits and anti-scalping rules, checked before anything is routed.
//!
//! - Token buckets (governor, in memory per replica) keyed by channel app,
//!   by client address and by acting person. The person bucket is much
//!   stricter in the minutes after a release time: an honest patient
//!   presses "book" once or twice then, a bot hundreds of times.
//! - One booking in flight per person: a bot's parallel requests for one
//!   identity are refused at once instead of queueing at the hospital.
//! - A cap on distinct persons booked from one client address per window
//!   (Redis, so it holds across replicas), for channels where the address
//!   is the patient's own device; many identities behind one address is
//!   the scalper's signature.
//! - The city-wide daily limit per person, in Redis under the person's own
//!   hash tag: reserved before routing, given back when the hospital refuses.
//!
//! # One round trip
//!
//! A booking attempt pays for its Redis rules once: [`Limits::admit`] runs
//! one script ([`ADMIT`]) under the patient's hash tag `{p:<patient>}` that
//! reads the cached standing, spends the request's nonce (deferred from the
//! signature check for `POST /v1/bookings`, see `crate::auth`), admits the
//! person to the address's set, takes the person's in-flight mark and the
//! day's reservation, or answers `SOLD_OUT` for a segment this replica
//! knows is sold out (`crate::soldout`) without reserving anything. After
//! the hospital answered, [`Limits::leave`] drops the in-flight mark and,
//! on a refusal, gives the reservation back, in one more round trip (only
//! for attempts that reached a hospital).
//!
//! On a Redis Cluster the address's set lives in the address's slot, not
//! the person's (its members are many persons), so there the persons-per-
//! address rule is a second round trip before the script
//! ([`Limits::admit_person_from`]); a single node runs it inside the script.

use std::hash::Hash;
use std::num::NonZeroU32;

use chrono::{DateTime, NaiveTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jyt_cache::redis::{self, Script};
use jyt_cache::{Keyspace, RedisConn};
use jyt_domain::Channel;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::settings::{AntiScalpingSettings, LimitSettings};

/// Admit `person` to the address's set unless it already holds `limit`
/// others. 1 admitted, 0 refused.
const ADMIT_PERSON: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
";

/// The booking attempt's admission, atomically, under the patient's hash
/// tag. Nothing is written before the first refusal that can be answered
/// without writing, so a refused attempt takes nothing it must give back.
///
/// KEYS[1] the patient's cached standing (`-` or `<unix>|<rfc3339>`),
/// KEYS[2] the nonce (with ARGV[2] = 1), KEYS[3] the in-flight mark,
/// KEYS[4] the day's reservations, KEYS[5] the persons of the address
/// (with ARGV[11] = 1; a single node only).
/// ARGV[1] now (unix s), ARGV[2] check the nonce, ARGV[3] nonce TTL (s),
/// ARGV[4] one in flight per person, ARGV[5] in-flight TTL (ms),
/// ARGV[6] request id, ARGV[7] daily limit, ARGV[8] daily TTL (s),
/// ARGV[9] now (RFC 3339), ARGV[10] the segment is known sold out,
/// ARGV[11] apply the address rule, ARGV[12] patient, ARGV[13] persons per
/// address, ARGV[14] window (s), ARGV[15] read the standing here (0: the
/// caller just asked card-issuing).
/// Returns {outcome, detail}: STANDING_UNKNOWN (nothing written),
/// REPLAYED_NONCE, PERSONS_PER_ADDRESS, BARRED <cached>, IN_FLIGHT,
/// DAILY_LIMIT, SOLD_OUT (nonce spent, nothing reserved), OK <1 newly
/// reserved | 0 a retry that holds one already>.
const ADMIT: &str = r"
local now = tonumber(ARGV[1])
local standing = '-'
if ARGV[15] == '1' then
  standing = redis.call('GET', KEYS[1])
  if not standing then return {'STANDING_UNKNOWN', ''} end
end
if ARGV[2] == '1' then
  if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', tonumber(ARGV[3])) then
    return {'REPLAYED_NONCE', ''}
  end
end
if ARGV[11] == '1' and redis.call('SISMEMBER', KEYS[5], ARGV[12]) == 0 then
  if redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[13]) then return {'PERSONS_PER_ADDRESS', ''} end
  redis.call('SADD', KEYS[5], ARGV[12])
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[14]))
end
if standing ~= '-' then
  local untl = tonumber(string.match(standing, '^(%d+)|'))
  if not untl then return {'STANDING_UNKNOWN', ''} end
  if untl > now then return {'BARRED', standing} end
end
local retry = redis.call('HEXISTS', KEYS[4], ARGV[6]) == 1
if not retry and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[7]) then
  return {'DAILY_LIMIT', ''}
end
if not retry and ARGV[10] == '1' then
  if ARGV[4] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return {'IN_FLIGHT', ''} end
  return {'SOLD_OUT', ''}
end
if ARGV[4] == '1' and not redis.call('SET', KEYS[3], ARGV[6], 'NX', 'PX', tonumber(ARGV[5])) then
  return {'IN_FLIGHT', ''}
end
if retry then return {'OK', '0'} end
redis.call('HSET', KEYS[4], ARGV[6], ARGV[9])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[8]))
return {'OK', '1'}
";

/// After the hospital answered: drop the in-flight mark (if it is still
/// this request's) and, with ARGV[2] = 1, give the day's reservation back.
/// KEYS[1] in-flight (the day's reservations again when there is no mark:
/// anti-scalping off), KEYS[2] the day's reservations; ARGV[1] request id.
const LEAVE: &str = r"
if KEYS[1] ~= KEYS[2] and redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[2] == '1' then redis.call('HDEL', KEYS[2], ARGV[1]) end
return 1
";

/// What [`Limits::admit`] is asked to admit.
pub struct AdmitRequest<'a> {
    pub holder: Uuid,
    pub patient: Uuid,
    /// The client's address, when the address rules apply to the channel.
    pub address: Option<&'a str>,
    /// The request's nonce, when its check was deferred to this script.
    pub nonce: Option<&'a crate::state::DeferredNonce>,
    /// The booking request's id (app, Idempotency-Key, slot): a retry of
    /// the same request does not count twice.
    pub request: &'a str,
    /// This replica knows the segment is sold out: a fresh request is
    /// answered here, a retry still goes to the hospital (it may be a
    /// booking made before the seats ran out).
    pub sold_out: bool,
    /// The standing is read from the cache in the script; `false` right
    /// after asking card-issuing (so a zero cache TTL still works).
    pub read_standing: bool,
}

/// The script's answer.
pub enum Admitted {
    /// Go on to the hospital; call [`Limits::leave`] with its answer.
    Go(Admission),
    /// The segment is known sold out: answer so, nothing was taken.
    SoldOut,
    /// The standing is not cached: ask card-issuing, then admit again.
    StandingUnknown,
    /// Barred until then.
    Barred(DateTime<Utc>),
}

/// What an admitted attempt holds: its in-flight mark and the day's
/// reservation. If dropped without [`Limits::leave`] (the request's task
/// was cancelled), the in-flight mark is dropped in the background and the
/// reservation kept, as after a timeout.
pub struct Admission {
    in_flight: Option<String>,
    daily: String,
    request: String,
    pub newly_taken: bool,
    redis: Option<(RedisConn, Script)>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let (Some(key), Some((redis, leave))) = (self.in_flight.take(), self.redis.take()) {
            let (daily, request) = (std::mem::take(&mut self.daily), std::mem::take(&mut self.request));
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let mut conn = redis;
                    let res: redis::RedisResult<i64> = leave
                        .key(&key)
                        .key(&daily)
                        .arg(&request)
                        .arg("0")
                        .invoke_async(&mut conn)
                        .await;
                    if let Err(e) = res {
                        tracing::warn!(error = %e, "could not drop an in-flight mark; it expires by itself");
                    }
                });
            }
        }
    }
}

pub struct Limits {
    app: DefaultKeyedRateLimiter<String>,
    address: DefaultKeyedRateLimiter<String>,
    person: DefaultKeyedRateLimiter<Uuid>,
    person_release: DefaultKeyedRateLimiter<Uuid>,
    /// `anti_scalping.enabled`: off, only the `limits.*` buckets apply.
    anti_scalping: bool,
    release_times: Vec<NaiveTime>,
    release_window_seconds: i64,
    max_persons_per_address: u32,
    persons_window_seconds: u64,
    address_rule_channels: Vec<Channel>,
    daily_limit: u32,
    redis: RedisConn,
    keys: Keyspace,
    admit_person: Script,
    admit: Script,
    leave: Script,
    /// `signing.nonce_ttl_seconds`, for nonces spent in [`ADMIT`].
    nonce_ttl: u64,
    /// How long an in-flight mark lives if its request never leaves (a
    /// crashed replica): the upstream timeout and then some.
    in_flight_ttl_ms: u64,
    /// On a cluster the address's set is in another slot (see the module doc).
    cluster: bool,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    // Validated non-zero at start; `MIN` keeps this total anyway.
    let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(burst)
}

fn take<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    limit: &'static str,
) -> Result<(), GatewayError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        GatewayError::RateLimited {
            limit,
            // Whole seconds, rounded up, never 0: "retry now" would be a lie.
            retry_after_seconds: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
        }
    })
}

/// The settings [`Limits`] borrows from other sections.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub nonce_ttl_seconds: u64,
    pub upstream_timeout_ms: u64,
}

impl Limits {
    pub fn new(
        limits: &LimitSettings,
        anti: &AntiScalpingSettings,
        timeouts: Timeouts,
        redis: RedisConn,
        keys: Keyspace,
    ) -> Self {
        Self {
            admit: Script::new(ADMIT),
            leave: Script::new(LEAVE),
            nonce_ttl: timeouts.nonce_ttl_seconds,
            in_flight_ttl_ms: timeouts.upstream_timeout_ms.saturating_mul(2).max(1_000),
            cluster: redis.is_cluster(),
            app: RateLimiter::keyed(quota(limits.app_per_minute, limits.app_burst)),
            address: RateLimiter::keyed(quota(limits.address_per_minute, limits.address_burst)),
            person: RateLimiter::keyed(quota(limits.person_per_minute, limits.person_burst)),
            person_release: RateLimiter::keyed(quota(
                anti.release_person_per_minute,
                anti.release_person_burst,
            )),
            anti_scalping: anti.enabled,
            release_times: anti.release_times(),
            release_window_seconds: i64::from(anti.release_window_seconds),
            max_persons_per_address: anti.max_persons_per_address,
            persons_window_seconds: anti.persons_window_seconds,
            address_rule_channels: anti.address_rule_channels(),
            daily_limit: limits.daily_bookings_per_person,
            redis,
            keys,
            admit_person: Script::new(ADMIT_PERSON),
        }
    }

    /// Forget idle buckets so memory follows active keys, not every key seen.
    pub fn shrink(&self) {
        self.app.retain_recent();
        self.address.retain_recent();
        self.person.retain_recent();
        self.person_release.retain_recent();
    }

    pub fn check_app(&self, app_id: &str) -> Result<(), GatewayError> {
        take(&self.app, &app_id.to_owned(), "app")
    }

    /// Whether the address rules apply to this channel: only where the
    /// address is the patient's own device. A kiosk fleet or the 114 call
    /// centre sends every patient's request from a few addresses.
    pub fn address_rules_apply(&self, channel: Channel) -> bool {
        self.address_rule_channels.contains(&channel)
    }

    pub fn check_address(&self, address: &str) -> Result<(), GatewayError> {
        take(&self.address, &address.to_owned(), "address")
    }

    pub fn in_release_window(&self, now: DateTime<Utc>) -> bool {
        let local = jyt_domain::time::local(now).time();
        self.release_times.iter().any(|t| {
            // Modulo a day, so a window that crosses midnight still counts.
            let since = (local - *t).num_seconds().rem_euclid(86_400);
            (0..self.release_window_seconds).contains(&since)
        })
    }

    /// The acting person's bucket; the stricter one in a release window.
    pub fn check_person(&self, person: Uuid, now: DateTime<Utc>) -> Result<(), GatewayError> {
        if self.anti_scalping && self.in_release_window(now) {
            take(&self.person_release, &person, "person_release_window")
        } else {
            take(&self.person, &person, "person")
        }
    }

    /// The distinct-persons-per-address cap (fixed windows).
    #[tracing::instrument(skip_all)]
    pub async fn admit_person_from(
        &self,
        address: &str,
        person: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), GatewayError> {
        if !self.anti_scalping {
            return Ok(());
        }
        let window = self.persons_window_seconds;
        let now_s = u64::try_from(now.timestamp()).unwrap_or(0);
        let (key, bucket) = self.address_key(address, now_s);
        let mut conn = self.redis.clone();
        let admitted: i64 = self
            .admit_person
            .key(&key)
            .arg(person.to_string())
            .arg(self.max_persons_per_address)
            .arg(window)
            .invoke_async(&mut conn)
            .await?;
        if admitted == 1 {
            Ok(())
        } else {
            Err(self.persons_refused(bucket, now_s))
        }
    }

    fn address_key(&self, address: &str, now_s: u64) -> (String, u64) {
        let bucket = now_s / self.persons_window_seconds;
        (
            self.keys.plain(&format!("addr:{address}:persons:{bucket}")),
            bucket,
        )
    }

    fn persons_refused(&self, bucket: u64, now_s: u64) -> GatewayError {
        let window = self.persons_window_seconds;
        GatewayError::RateLimited {
            limit: "persons_per_address",
            retry_after_seconds: ((bucket + 1) * window).saturating_sub(now_s).max(1),
        }
    }

    /// The patient's keys under their own hash tag.
    fn person_key(&self, patient: Uuid, rest: &str) -> String {
        self.keys.tagged(&format!("p:{patient}"), rest)
    }

    /// The attempt's Redis rules in one round trip (see [`ADMIT`]); on a
    /// cluster, the address's rule first in its own (see the module doc).
    #[tracing::instrument(skip_all)]
    pub async fn admit(&self, req: &AdmitRequest<'_>, now: DateTime<Utc>) -> Result<Admitted, GatewayError> {
        let now_s = u64::try_from(now.timestamp()).unwrap_or(0);
        let address = req.address.filter(|_| self.anti_scalping);
        let mut in_script_address = None;
        if let Some(address) = address {
            if self.cluster {
                self.admit_person_from(address, req.patient, now).await?;
            } else {
                in_script_address = Some(self.address_key(address, now_s));
            }
        }
        let day = jyt_domain::time::local(now).date_naive();
        let standing = crate::identity::standing_key(&self.keys, req.patient);
        let nonce = req.nonce.map_or_else(
            || standing.clone(),
            |n| self.person_key(req.patient, &n.key_rest()),
        );
        // The mark is the acting holder's (a bot drives one identity), kept
        // under the patient's tag so the whole script stays in one slot.
        let in_flight = self.person_key(req.patient, &format!("inflight:{}", req.holder));
        let daily = self.person_key(req.patient, &format!("daily:{day}"));
        let (address_key, bucket) = in_script_address.clone().unwrap_or_else(|| (standing.clone(), 0));
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut conn = self.redis.clone();
        let (outcome, detail): (String, String) = self
            .admit
            .key(&standing)
            .key(&nonce)
            .key(&in_flight)
            .key(&daily)
            .key(&address_key)
            .arg(now_s)
            .arg(flag(req.nonce.is_some()))
            .arg(self.nonce_ttl)
            .arg(flag(self.anti_scalping))
            .arg(self.in_flight_ttl_ms)
            .arg(req.request)
            .arg(self.daily_limit)
            .arg(2 * 86_400)
            .arg(now.to_rfc3339())
            .arg(flag(req.sold_out))
            .arg(flag(in_script_address.is_some()))
            .arg(req.patient.to_string())
            .arg(self.max_persons_per_address)
            .arg(self.persons_window_seconds)
            .arg(flag(req.read_standing))
            .invoke_async(&mut conn)
            .await?;
        match outcome.as_str() {
            "OK" => Ok(Admitted::Go(Admission {
                in_flight: self.anti_scalping.then_some(in_flight),
                daily,
                request: req.request.to_owned(),
                newly_taken: detail == "1",
                redis: Some((self.redis.clone(), self.leave.clone())),
            })),
            "SOLD_OUT" => Ok(Admitted::SoldOut),
            "STANDING_UNKNOWN" => Ok(Admitted::StandingUnknown),
            "BARRED" => Ok(crate::identity::parse_standing(&detail)
                .flatten()
                .map_or(Admitted::StandingUnknown, Admitted::Barred)),
            "REPLAYED_NONCE" => Err(GatewayError::ReplayedNonce),
            "PERSONS_PER_ADDRESS" => Err(self.persons_refused(bucket, now_s)),
            "IN_FLIGHT" => Err(GatewayError::RateLimited {
                limit: "person_in_flight",
                retry_after_seconds: 1,
            }),
            "DAILY_LIMIT" => Err(GatewayError::DailyLimitReached {
                limit: self.daily_limit,
            }),
            other => Err(GatewayError::Unexpected(anyhow::anyhow!(
                "the admission script answered {other}"
            ))),
        }
    }

    /// The hospital answered: drop the in-flight mark and, when `give_back`,
    /// the day's reservation, in one round trip (none if there is nothing
    /// to do).
    pub async fn leave(&self, mut admission: Admission, give_back: bool) {
        let in_flight = admission.in_flight.take();
        admission.redis = None;
        let give_back = give_back && admission.newly_taken;
        if in_flight.is_none() && !give_back {
            return;
        }
        let mut conn = self.redis.clone();
        let res: redis::RedisResult<i64> = self
            .leave
            .key(in_flight.as_deref().unwrap_or(admission.daily.as_str()))
            .key(&admission.daily)
            .arg(&admission.request)
            .arg(if give_back { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = res {
            // The person loses one of the day's bookings until midnight, and
            // their in-flight mark lives until it expires; logged so an
            // operator can see it, not worth failing the answer.
            tracing::warn!(error = %e, "could not leave the admission");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn release_windows_are_minutes_after_each_release_time_in_shanghai() {
        let times: Vec<NaiveTime> = ["07:30", "15:00"]
            .iter()
            .map(|t| NaiveTime::parse_from_str(t, "%H:%M").unwrap())
            .collect();
        let inside = |h, m, s| {
            let now = Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).unwrap();
            let local = jyt_domain::time::local(now).time();
            times
                .iter()
                .any(|t| (0..180).contains(&(local - *t).num_seconds().rem_euclid(86_400)))
        };
        // 07:30 Shanghai is 23:30 UTC the day before.
        assert!(inside(23, 30, 0));
        assert!(inside(23, 32, 59));
        assert!(!inside(23, 33, 0));
        assert!(!inside(23, 29, 59));
        assert!(inside(7, 1, 0)); // 15:01 Shanghai
    }
}
