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

use std::collections::HashSet;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jyt_cache::redis::{self, Script};
use jyt_cache::{Keyspace, RedisConn};
use jyt_domain::Channel;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::settings::{AntiScalpingSettings, LimitSettings};

/// Take one reservation unless the person already has `limit` today.
/// Returns 1 (newly reserved), 0 (this request already held one: a retry)
/// or -1 (limit reached).
const RESERVE_DAILY: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
";

/// Admit `person` to the address's set unless it already holds `limit`
/// others. 1 admitted, 0 refused.
const ADMIT_PERSON: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
";

pub struct Limits {
    app: DefaultKeyedRateLimiter<String>,
    address: DefaultKeyedRateLimiter<String>,
    person: DefaultKeyedRateLimiter<Uuid>,
    person_release: DefaultKeyedRateLimiter<Uuid>,
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
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
    reserve_daily: Script,
    admit_person: Script,
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

/// Removes the person from the in-flight set when the booking is answered.
pub struct InFlight {
    /// None when the anti-scalping rules are off.
    set: Option<Arc<Mutex<HashSet<Uuid>>>>,
    person: Uuid,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(set) = &self.set {
            set.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&self.person);
        }
    }
}

/// A daily reservation this request took; give it back if the booking fails.
#[derive(Debug, Clone)]
pub struct DailyReservation {
    key: String,
    field: String,
    pub newly_taken: bool,
}

impl Limits {
    pub fn new(
        limits: &LimitSettings,
        anti: &AntiScalpingSettings,
        redis: RedisConn,
        keys: Keyspace,
    ) -> Self {
        Self {
            app: RateLimiter::keyed(quota(limits.app_per_minute, limits.app_burst)),
            address: RateLimiter::keyed(quota(limits.address_per_minute, limits.address_burst)),
            person: RateLimiter::keyed(quota(limits.person_per_minute, limits.person_burst)),
            person_release: RateLimiter::keyed(quota(
                anti.release_person_per_minute,
                anti.release_person_burst,
            )),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            anti_scalping: anti.enabled,
            release_times: anti.release_times(),
            release_window_seconds: i64::from(anti.release_window_seconds),
            max_persons_per_address: anti.max_persons_per_address,
            persons_window_seconds: anti.persons_window_seconds,
            address_rule_channels: anti.address_rule_channels(),
            daily_limit: limits.daily_bookings_per_person,
            redis,
            keys,
            reserve_daily: Script::new(RESERVE_DAILY),
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

    /// One booking in flight per person.
    pub fn enter(&self, person: Uuid) -> Result<InFlight, GatewayError> {
        if !self.anti_scalping {
            return Ok(InFlight { set: None, person });
        }
        let mut set = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !set.insert(person) {
            return Err(GatewayError::RateLimited {
                limit: "person_in_flight",
                retry_after_seconds: 1,
            });
        }
        Ok(InFlight {
            set: Some(self.in_flight.clone()),
            person,
        })
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
        let bucket = now_s / window;
        let key = self.keys.plain(&format!("addr:{address}:persons:{bucket}"));
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
            Err(GatewayError::RateLimited {
                limit: "persons_per_address",
                retry_after_seconds: ((bucket + 1) * window).saturating_sub(now_s).max(1),
            })
        }
    }

    /// Reserve one of the person's bookings of the (Asia/Shanghai) day.
    /// `request` identifies the booking request (app, Idempotency-Key,
    /// slot), so a retry of the same request does not count twice.
    #[tracing::instrument(skip_all)]
    pub async fn reserve_daily(
        &self,
        person: Uuid,
        request: &str,
        now: DateTime<Utc>,
    ) -> Result<DailyReservation, GatewayError> {
        let day = jyt_domain::time::local(now).date_naive();
        let key = self.keys.tagged(&format!("p:{person}"), &format!("daily:{day}"));
        let mut conn = self.redis.clone();
        let taken: i64 = self
            .reserve_daily
            .key(&key)
            .arg(request)
            .arg(self.daily_limit)
            .arg(2 * 86_400)
            .arg(now.to_rfc3339())
            .invoke_async(&mut conn)
            .await?;
        if taken < 0 {
            return Err(GatewayError::DailyLimitReached {
                limit: self.daily_limit,
            });
        }
        Ok(DailyReservation {
            key,
            field: request.to_owned(),
            newly_taken: taken == 1,
        })
    }

    /// Give a reservation back (the hospital refused the booking).
    pub async fn release_daily(&self, r: &DailyReservation) {
        let mut conn = self.redis.clone();
        let res: redis::RedisResult<i64> = redis::cmd("HDEL")
            .arg(&r.key)
            .arg(&r.field)
            .query_async(&mut conn)
            .await;
        if let Err(e) = res {
            // The person loses one of the day's bookings until midnight;
            // logged so an operator can see it, not worth failing the answer.
            tracing::warn!(error = %e, "could not give back a daily reservation");
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
