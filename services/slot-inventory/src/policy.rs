//! The hospital's booking policy (per-hospital configuration): when a day's
//! clinics are released, until when patients may cancel, how long an unpaid
//! hold lasts, the check-in window, channel pool shares and when they merge,
//! and the per-person limits. Everything here is a pure function of the
//! policy and a date, so it is tested without a clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};
use jyt_domain::time::at;
use jyt_settings::Invalid;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pools a segment's capacity is split into; `common` takes the remainder.
/// `signed` is not a channel: it is the share a community health centre
/// keeps for the residents signed with the schedule's doctor's family
/// doctor team (家庭医生签约; see `booking::signed`).
pub const POOLS: [&str; 9] = [
    "wechat", "kiosk", "phone114", "window", "app", "referral", "clinic", "signed", "common",
];

/// The pools with a share of their own: every pool but `common`.
const SHARED_POOLS: usize = POOLS.len() - 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Rolling window: at `release_time` on day D, day D + window opens.
    pub window_days: u32,
    #[serde(deserialize_with = "hh_mm", serialize_with = "to_hh_mm")]
    pub release_time: NaiveTime,
    /// Cancellation closes at `cancel_time` this many days before the visit.
    pub cancel_days_before: u32,
    #[serde(deserialize_with = "hh_mm", serialize_with = "to_hh_mm")]
    pub cancel_time: NaiveTime,
    /// How long a booking with a fee stays held, unpaid.
    pub hold_minutes: u32,
    /// Check-in (取号) opens this long before the segment starts and closes
    /// at its end.
    pub checkin_opens_minutes_before: u32,
    /// A booking not checked in by the segment's end plus this is a no-show.
    pub no_show_grace_minutes: u32,
    /// Unused channel shares merge into the common pool at `pool_merge_time`
    /// this many days before the visit.
    pub pool_merge_days_before: u32,
    #[serde(deserialize_with = "hh_mm", serialize_with = "to_hh_mm")]
    pub pool_merge_time: NaiveTime,
    /// Percent of each segment's capacity reserved per pool (not `common`).
    pub pool_shares: BTreeMap<String, u32>,
    pub max_per_person_per_day: u32,
    pub max_per_person_per_department_per_day: u32,
    /// A waitlist longer than this asks the hospital to add capacity.
    pub waitlist_capacity_request_threshold: u32,
    /// How a published schedule is released when its publish does not say:
    /// `first_come` or `lottery` (see `crate::lottery`).
    #[serde(default)]
    pub release_mode: crate::lottery::ReleaseMode,
    /// A lottery's window when its publish does not say, 1 to 300 s.
    #[serde(default = "default_lottery_window_seconds")]
    pub lottery_window_seconds: u32,
}

fn default_lottery_window_seconds() -> u32 {
    10
}

fn hh_mm<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
    let s = String::deserialize(d)?;
    NaiveTime::parse_from_str(&s, "%H:%M")
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not HH:MM")))
}

fn to_hh_mm<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.format("%H:%M").to_string())
}

impl Policy {
    pub fn validate(&self, prefix: &str) -> Result<(), Invalid> {
        if !(1..=90).contains(&self.window_days) {
            return Err(Invalid::new(
                format!("{prefix}.window_days"),
                "must be between 1 and 90",
            ));
        }
        if !(1..=24 * 60).contains(&self.hold_minutes) {
            return Err(Invalid::new(
                format!("{prefix}.hold_minutes"),
                "must be between 1 and 1440",
            ));
        }
        if self.cancel_days_before > 30 {
            return Err(Invalid::new(
                format!("{prefix}.cancel_days_before"),
                "must be at most 30",
            ));
        }
        if self.pool_merge_days_before > 30 {
            return Err(Invalid::new(
                format!("{prefix}.pool_merge_days_before"),
                "must be at most 30",
            ));
        }
        for (pool, share) in &self.pool_shares {
            if !POOLS[..SHARED_POOLS].contains(&pool.as_str()) {
                return Err(Invalid::new(
                    format!("{prefix}.pool_shares.{pool}"),
                    "is not a pool with a share (wechat, kiosk, phone114, window, app, referral, clinic, signed)",
                ));
            }
            if *share > 100 {
                return Err(Invalid::new(
                    format!("{prefix}.pool_shares.{pool}"),
                    "must be at most 100",
                ));
            }
        }
        if self.pool_shares.values().sum::<u32>() > 100 {
            return Err(Invalid::new(
                format!("{prefix}.pool_shares"),
                "shares add up to more than 100",
            ));
        }
        if !crate::lottery::WINDOW_SECONDS.contains(&self.lottery_window_seconds) {
            return Err(Invalid::new(
                format!("{prefix}.lottery_window_seconds"),
                "must be between 1 and 300",
            ));
        }
        if self.max_per_person_per_day == 0 || self.max_per_person_per_department_per_day == 0 {
            return Err(Invalid::new(
                format!("{prefix}.max_per_person_per_day"),
                "per-person limits must be at least 1",
            ));
        }
        Ok(())
    }

    fn days_before(date: NaiveDate, days: u32) -> NaiveDate {
        date.checked_sub_days(Days::new(u64::from(days))).unwrap_or(date)
    }

    /// When the clinics of `visit_date` open for booking.
    pub fn release_at(&self, visit_date: NaiveDate) -> DateTime<Utc> {
        at(Self::days_before(visit_date, self.window_days), self.release_time)
    }

    /// The last instant a patient may cancel a visit on `visit_date`.
    pub fn cancel_deadline(&self, visit_date: NaiveDate) -> DateTime<Utc> {
        at(
            Self::days_before(visit_date, self.cancel_days_before),
            self.cancel_time,
        )
    }

    /// The first visit date whose cancellation deadline has not passed at
    /// `now`: a booking of that day or later may still be cancelled. The
    /// deadline moves forward with the visit date, so the first is found
    /// walking up from the day before today's deadline day.
    pub fn first_cancellable_visit(&self, now: DateTime<Utc>) -> NaiveDate {
        let today = now.with_timezone(&jyt_domain::time::shanghai()).date_naive();
        let mut date = today
            .checked_add_days(Days::new(u64::from(self.cancel_days_before)))
            .and_then(|d| d.pred_opt())
            .unwrap_or(today);
        while self.cancel_deadline(date) < now {
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        date
    }

    /// When unused channel shares of `visit_date` merge into the common pool.
    pub fn pool_merge_at(&self, visit_date: NaiveDate) -> DateTime<Utc> {
        at(
            Self::days_before(visit_date, self.pool_merge_days_before),
            self.pool_merge_time,
        )
    }

    pub fn hold_length(&self) -> TimeDelta {
        TimeDelta::minutes(i64::from(self.hold_minutes))
    }

    /// Seats per pool for a segment of `capacity` seats: each channel's
    /// share rounded down, the rest in `common`.
    pub fn pool_split(&self, capacity: i32) -> Vec<(&'static str, i32)> {
        let capacity = capacity.max(0);
        let mut out = Vec::with_capacity(POOLS.len());
        let mut reserved = 0;
        for pool in &POOLS[..SHARED_POOLS] {
            let share = i64::from(self.pool_shares.get(*pool).copied().unwrap_or(0));
            let n = i32::try_from(i64::from(capacity) * share / 100).unwrap_or(0);
            reserved += n;
            out.push((*pool, n));
        }
        out.push(("common", capacity - reserved));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            window_days: 7,
            release_time: NaiveTime::from_hms_opt(8, 30, 0).unwrap(),
            cancel_days_before: 1,
            cancel_time: NaiveTime::from_hms_opt(15, 0, 0).unwrap(),
            hold_minutes: 10,
            checkin_opens_minutes_before: 60,
            no_show_grace_minutes: 30,
            pool_merge_days_before: 1,
            pool_merge_time: NaiveTime::from_hms_opt(15, 0, 0).unwrap(),
            pool_shares: [("wechat", 40), ("kiosk", 30), ("phone114", 10), ("referral", 5)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            max_per_person_per_day: 2,
            max_per_person_per_department_per_day: 1,
            waitlist_capacity_request_threshold: 10,
            release_mode: crate::lottery::ReleaseMode::FirstCome,
            lottery_window_seconds: 10,
        }
    }

    #[test]
    fn day_d_plus_window_opens_at_the_release_time_in_beijing() {
        let p = policy();
        let visit = NaiveDate::from_ymd_opt(2026, 12, 8).unwrap();
        assert_eq!(p.release_at(visit).to_rfc3339(), "2026-12-01T00:30:00+00:00");
        assert_eq!(p.cancel_deadline(visit).to_rfc3339(), "2026-12-07T07:00:00+00:00");
        assert_eq!(p.pool_merge_at(visit).to_rfc3339(), "2026-12-07T07:00:00+00:00");
    }

    proptest::proptest! {
        /// A visit may be cancelled exactly when its date is the first
        /// cancellable one or later: what the cancellation's one statement
        /// compares, against the deadline itself, for any instant, any
        /// number of days before and any time of day.
        #[test]
        fn the_first_cancellable_visit_is_where_the_deadline_is_not_yet_past(
            seconds in 1_700_000_000_i64..1_900_000_000,
            days_before in 0_u32..5,
            hour in 0_u32..24,
            minute in 0_u32..60,
        ) {
            let mut p = policy();
            p.cancel_days_before = days_before;
            p.cancel_time = NaiveTime::from_hms_opt(hour, minute, 0).unwrap();
            let now = DateTime::from_timestamp(seconds, 0).unwrap();
            let first = p.first_cancellable_visit(now);
            for offset in -3_i64..10 {
                let visit = first + TimeDelta::days(offset);
                proptest::prop_assert_eq!(visit >= first, now <= p.cancel_deadline(visit), "visit {}", visit);
            }
        }
    }

    #[test]
    fn pools_take_their_shares_rounded_down_and_common_the_rest() {
        let split = policy().pool_split(7);
        let get = |name| split.iter().find(|(p, _)| *p == name).unwrap().1;
        assert_eq!(get("wechat"), 2);
        assert_eq!(get("kiosk"), 2);
        assert_eq!(get("phone114"), 0);
        assert_eq!(get("referral"), 0);
        assert_eq!(get("common"), 3);
        assert_eq!(split.iter().map(|(_, n)| n).sum::<i32>(), 7);
    }

    #[test]
    fn a_lottery_window_outside_1_to_300_seconds_is_refused_naming_the_key() {
        for bad in [0, 301] {
            let mut p = policy();
            p.lottery_window_seconds = bad;
            assert_eq!(
                p.validate("policy").unwrap_err().key,
                "policy.lottery_window_seconds"
            );
        }
        let mut p = policy();
        p.lottery_window_seconds = 300;
        assert!(p.validate("policy").is_ok());
    }

    #[test]
    fn a_policy_stored_before_lotteries_reads_as_first_come() {
        let mut stored = serde_json::to_value(policy()).unwrap();
        let fields = stored.as_object_mut().unwrap();
        fields.remove("release_mode");
        fields.remove("lottery_window_seconds");
        let read: Policy = serde_json::from_value(stored).unwrap();
        assert_eq!(read.release_mode, crate::lottery::ReleaseMode::FirstCome);
        assert_eq!(read.lottery_window_seconds, 10);
    }

    #[test]
    fn a_window_of_zero_is_refused_naming_the_key() {
        let mut p = policy();
        p.window_days = 0;
        assert_eq!(p.validate("policy").unwrap_err().key, "policy.window_days");
        let mut p = policy();
        p.pool_shares.insert("wechat".into(), 90);
        assert_eq!(p.validate("policy").unwrap_err().key, "policy.pool_shares");
    }
}
