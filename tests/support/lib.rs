//! # Layout
//! Start real services on port 0 against a fresh database per hospital and
//! a fresh Redis key prefix per test, and talk to them over HTTP:
//! - [`hospital`]: one slot-inventory with its state (pool, Redis) and
//!   invariant checks read straight from PostgreSQL and Redis;
//! - [`city`]: hospitals behind a gateway (and channel-accounting), with
//!   typed request helpers;
//! - [`callback`]: a channel app's notice endpoint that records what the
//!   gateway's notifier sends;
//! - [`sessions`]: a hospital's federation keys and the sessions it
//!   publishes.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failure is a failed test"
)]

pub mod callback;
pub mod city;
pub mod faults;
pub mod hospital;
pub mod redis_cluster;
pub mod sessions;

use std::collections::HashMap;

use chrono::{Days, NaiveDate};
use jyt_settings::Sources;

pub use callback::Callback;
pub use city::{CONSOLE_PASSWORD, GATEWAY_MASTER_SECRET, TestConsole, spawn_console, spawn_console_on};
pub use city::{
    Route, TEST_APP_SECRET, TestCards, TestPatient, sign, signed, spawn_cards, spawn_gateway_with,
};
pub use city::{RunningGateway, TestCity, problem, spawn_accounting, spawn_gateway, start_gateway};
pub use hospital::TestHospital;
pub use jyt_testkit::eventually;
pub use sessions::{Session, fed, federated_city, hospital_keys};

pub(crate) fn sources(pairs: Vec<(String, String)>) -> Sources {
    Sources::from_map(pairs.into_iter().collect::<HashMap<_, _>>())
}

/// Every entry of a Redis stream, as its fields, oldest first: to deliver
/// them again (XADD) as a relay that crashed after XADD would.
pub async fn stream_entries(conn: &mut jyt_cache::RedisConn, stream: &str) -> Vec<Vec<(String, String)>> {
    use jyt_cache::redis;
    let reply: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(conn, stream).await.unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v.clone()).unwrap()))
                .collect()
        })
        .collect()
}

/// Hospital settings that reserve no channel pools: every seat is in the
/// common pool, for tests about the lock itself rather than the pools.
pub const ALL_SEATS_COMMON: &[(&str, &str)] = &[
    ("POLICY__POOL_SHARES__WECHAT", "0"),
    ("POLICY__POOL_SHARES__KIOSK", "0"),
    ("POLICY__POOL_SHARES__PHONE114", "0"),
    ("POLICY__POOL_SHARES__WINDOW", "0"),
    ("POLICY__POOL_SHARES__APP", "0"),
    ("POLICY__POOL_SHARES__REFERRAL", "0"),
    ("POLICY__POOL_SHARES__CLINIC", "0"),
];

/// The day the system tests book: the day after tomorrow (Asia/Shanghai),
/// released days ago and still before both 15:00 deadlines of the day
/// before the visit (cancellation closes, the channel pools merge), so a
/// test sees the same rules whatever the time of day it runs.
pub fn visit_day() -> NaiveDate {
    jyt_domain::time::today().checked_add_days(Days::new(2)).unwrap()
}
