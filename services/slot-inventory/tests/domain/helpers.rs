//! A hospital's state without its HTTP server or sweepers (tests run the
//! sweepers' steps themselves, in order), seeded with a demo day.

use std::collections::HashMap;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};
use jyt_cache::redis;
use jyt_domain::time::{Clock, at};
use jyt_domain::{BookingRef, Channel, SlotRef};
use jyt_settings::Sources;
use slot_inventory::AppState;
use slot_inventory::booking::service::{self, BookOutcome};
use slot_inventory::booking::{BookRequest, Booking};
use slot_inventory::error::SlotError;
use slot_inventory::schedule::queries::StoredSchedule;
use uuid::Uuid;

/// The visit date every test books: far enough ahead to move around it.
pub fn visit_date() -> NaiveDate {
    jyt_domain::time::today().checked_add_days(Days::new(10)).unwrap()
}

/// `hh:mm` in Beijing, `days` before the visit date.
pub fn beijing(days_before: u64, hh: u32, mm: u32) -> DateTime<Utc> {
    at(
        visit_date().checked_sub_days(Days::new(days_before)).unwrap(),
        NaiveTime::from_hms_opt(hh, mm, 0).unwrap(),
    )
}

/// The demo day's schedules, in seed order.
pub mod sched {
    pub const CARDIO_EXPERT_AM: usize = 0;
    pub const CARDIO_GENERAL_AM: usize = 2;
    pub const PEDS_EXPERT_AM: usize = 4;
    pub const ENDO_AM: usize = 8;
    pub const CT_AM: usize = 10;
}

pub struct Hospital {
    pub state: AppState,
    pub clock: Clock,
    pub schedules: Vec<StoredSchedule>,
}

impl Hospital {
    /// A hospital at `now`, with `capacity` seats per segment and `extra`
    /// settings (keys after `JYT_SLOT_INVENTORY__`).
    pub async fn start(now: DateTime<Utc>, capacity: i32, extra: &[(&str, &str)]) -> Self {
        let database_url = jyt_testkit::fresh_database("slotdomain").await;
        let p = "JYT_SLOT_INVENTORY__";
        let mut env: HashMap<String, String> = [
            ("HOSPITAL__ID", "testh"),
            ("POSTGRES__URL", database_url.as_str()),
            ("REDIS__KEY_PREFIX", jyt_testkit::fresh_redis_prefix().as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{p}{k}"), v.to_owned()))
        .collect();
        env.insert(format!("{p}REDIS__URLS"), jyt_testkit::redis_url());
        for (k, v) in extra {
            env.insert(format!("{p}{k}"), (*v).to_owned());
        }
        let settings = slot_inventory::Settings::load_from(&Sources::from_map(env)).expect("settings");
        let clock = Clock::manual(now);
        let state = slot_inventory::startup::connect(&settings, &prometheus::Registry::new(), clock.clone())
            .await
            .expect("connects");
        slot_inventory::booking::cache::ensure(&state)
            .await
            .expect("cache ready");
        let schedules = slot_inventory::seed::seed_demo_day(&state, visit_date(), capacity)
            .await
            .expect("seeded");
        Self {
            state,
            clock,
            schedules,
        }
    }

    pub fn segment(&self, schedule: usize, segment: usize) -> SlotRef {
        SlotRef::new(
            self.state.hospital.clone(),
            self.schedules[schedule].segment_ids[segment],
        )
    }

    pub fn advance(&self, minutes: i64) {
        self.clock.advance(TimeDelta::minutes(minutes));
    }

    pub async fn book_via(
        &self,
        slot: &SlotRef,
        patient: Uuid,
        channel: Channel,
        referral: Option<&str>,
    ) -> Result<BookOutcome, SlotError> {
        let req = BookRequest {
            slot_id: slot.clone(),
            patient_id: patient,
            channel,
            referral_id: referral.map(str::to_owned),
            waitlist_entry: None,
            offer: None,
        };
        service::book(
            self.state.clone(),
            req,
            Uuid::new_v4().to_string().parse().unwrap(),
        )
        .await
    }

    pub async fn book(&self, slot: &SlotRef, patient: Uuid, channel: Channel) -> Result<Booking, SlotError> {
        self.book_via(slot, patient, channel, None)
            .await
            .map(|o| o.booking)
    }

    pub async fn booking(&self, id: &BookingRef) -> Booking {
        let client = self.state.pool.get().await.unwrap();
        slot_inventory::booking::queries::get_booking(&client, &self.state.hospital, id.id)
            .await
            .unwrap()
            .unwrap()
            .booking
    }

    pub async fn event_types(&self) -> Vec<String> {
        let client = self.state.pool.get().await.unwrap();
        client
            .query("SELECT event_type FROM outbox ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The state (`idle`, `idle in transaction`, ...) of the pool's
    /// connection, as another connection sees it in `pg_stat_activity`
    /// (for tests running the pool at one connection).
    pub async fn pooled_connection_state(&self) -> String {
        let client = self.state.pool.get().await.unwrap();
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        drop(client);
        let observer = jyt_db::build_pool(&self.state.settings.postgres).unwrap();
        observer
            .get()
            .await
            .unwrap()
            .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap()
            .get(0)
    }

    /// Free seats of a segment as Redis has them.
    pub async fn redis_free(&self, slot: &SlotRef) -> i64 {
        let info = service::segment_info(&self.state, slot.id).await.unwrap();
        let keys = self.state.keys.segment(&info);
        let mut conn = self.state.redis.clone();
        redis::cmd("LLEN")
            .arg(&keys.free)
            .query_async(&mut conn)
            .await
            .unwrap()
    }
}

pub fn code(e: &SlotError) -> &'static str {
    e.code()
}
