//! A hospital's state without its HTTP server or sweepers (tests run the
//! sweepers' steps themselves, in order), seeded with a demo day.

use std::collections::HashMap;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};
use jyt_cache::redis;
use jyt_domain::time::{Clock, at};
use jyt_domain::{BookingRef, Channel, SlotRef};
use jyt_settings::Sources;
use slot_inventory::AppState;
use slot_inventory::booking::hold::SegmentKeys;
use slot_inventory::booking::queries::BookingToWrite;
use slot_inventory::booking::service::{self, BookOutcome};
use slot_inventory::booking::{BookRequest, Booking, cache};
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

/// Settings that put every seat in the common pool (the clinic's share
/// aside): any channel may take any seat.
pub const ALL_COMMON: &[(&str, &str)] = &[
    ("POLICY__POOL_SHARES__WECHAT", "0"),
    ("POLICY__POOL_SHARES__KIOSK", "0"),
    ("POLICY__POOL_SHARES__PHONE114", "0"),
    ("POLICY__POOL_SHARES__WINDOW", "0"),
    ("POLICY__POOL_SHARES__APP", "0"),
    ("POLICY__POOL_SHARES__REFERRAL", "0"),
];

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
        service::book(
            self.state.clone(),
            book_request(slot, patient, channel, referral),
            Uuid::new_v4().to_string().parse().unwrap(),
        )
        .await
    }

    pub async fn book(&self, slot: &SlotRef, patient: Uuid, channel: Channel) -> Result<Booking, SlotError> {
        self.book_via(slot, patient, channel, None)
            .await
            .map(|o| o.booking)
    }

    /// A new patient's booking of the first cardiology expert segment of
    /// the morning (a fee, so it is held until paid).
    pub async fn book_expert(&self, channel: Channel) -> Booking {
        self.book(&self.segment(sched::CARDIO_EXPERT_AM, 0), Uuid::new_v4(), channel)
            .await
            .unwrap()
    }

    /// A referral from a community health centre to `department` of this
    /// hospital for `patient`, valid `minutes` from now.
    pub async fn referral(&self, patient: Uuid, department: &str, minutes: i64) -> Uuid {
        let req = slot_inventory::booking::referral::IssueRequest {
            patient_id: patient,
            issuing_hospital: "haizhu-chc".to_owned(),
            issuing_team: "team-1".to_owned(),
            issuing_doctor: "gp-1".to_owned(),
            department: department.to_owned(),
            diagnosis_code: "I20.9".to_owned(),
            reason: "angina, needs a cardiologist".to_owned(),
            expires_at: Some(self.clock.now() + TimeDelta::minutes(minutes)),
        };
        let key = Uuid::new_v4().to_string();
        slot_inventory::booking::referral::issue(&self.state, &req, &key)
            .await
            .unwrap()
            .0
            .referral_id
    }

    /// Wait for the promotion passes that freed seats started to end: they
    /// run in tasks of their own (`waitlist::promote_freed`), not in the
    /// request that freed the seat.
    pub async fn passes_done(&self) {
        jyt_testkit::eventually(
            std::time::Duration::from_secs(20),
            "the waitlist passes to end",
            || async { self.state.waitlist_passes.idle().then_some(()) },
        )
        .await;
    }

    pub async fn booking(&self, id: &BookingRef) -> Booking {
        let client = self.state.pool.get().await.unwrap();
        slot_inventory::booking::queries::get_booking(&client, &self.state.hospital, id.id)
            .await
            .unwrap()
            .unwrap()
            .booking
    }

    /// A `count(*)` (or any one bigint) read straight from the database.
    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.state.pool.get().await.unwrap();
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// The first column of every row of `sql`, read straight from the database.
    pub async fn column<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'a> jyt_db::tokio_postgres::types::FromSql<'a>,
    {
        let client = self.state.pool.get().await.unwrap();
        client
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// A pooled connection that can read pages (`pageinspect`, part of
    /// Debian's postgresql-15): for tests of what an update writes.
    pub async fn page_reader(&self) -> jyt_db::deadpool_postgres::Object {
        let client = self.state.pool.get().await.unwrap();
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
            .await
            .unwrap();
        client
    }

    pub async fn event_types(&self) -> Vec<String> {
        self.column("SELECT event_type FROM outbox ORDER BY seq").await
    }

    /// The payloads of the events of `event_type` written for a booking.
    pub async fn events_of(&self, event_type: &str, booking: &Booking) -> Vec<serde_json::Value> {
        let client = self.state.pool.get().await.unwrap();
        client
            .query(
                "SELECT payload FROM outbox WHERE event_type = $1 AND aggregate_id = $2 ORDER BY seq",
                &[&event_type, &booking.booking_id.to_string()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The transactions that last wrote these bookings: one for a batch
    /// written in one commit.
    pub async fn last_writers(&self, bookings: &[&Booking]) -> i64 {
        let ids: Vec<Uuid> = bookings.iter().map(|b| b.booking_id.id).collect();
        let client = self.state.pool.get().await.unwrap();
        client
            .query_one(
                "SELECT count(DISTINCT xmin::text) FROM bookings WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0)
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

    /// The Redis keys of a segment's scripts.
    pub async fn segment_keys(&self, slot: &SlotRef) -> SegmentKeys {
        let info = cache::segment_info(&self.state, slot.id).await.unwrap();
        self.state.keys.segment(&info)
    }

    /// The hospital's expiry index: (booking id, deadline) of every unpaid
    /// hold, soonest first.
    pub async fn expiry_index(&self) -> Vec<(String, i64)> {
        let mut conn = self.state.redis.clone();
        redis::cmd("ZRANGE")
            .arg(self.state.keys.holds())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// A segment's free seats as Redis has them, in the order holds take them.
    pub async fn redis_free_seats(&self, slot: &SlotRef) -> Vec<i32> {
        let keys = self.segment_keys(slot).await;
        let mut conn = self.state.redis.clone();
        redis::cmd("LRANGE")
            .arg(&keys.free)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Free seats of a segment as Redis has them.
    pub async fn redis_free(&self, slot: &SlotRef) -> i64 {
        let keys = self.segment_keys(slot).await;
        let mut conn = self.state.redis.clone();
        redis::cmd("LLEN")
            .arg(&keys.free)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// No oversell, and Redis agrees with PostgreSQL on a segment: live
    /// bookings within capacity and each pool's share, the same holders,
    /// free seats + live bookings = capacity, the pools adding up to the
    /// free seats, and no pool keeping back for the waitlist more seats
    /// than it has left.
    pub async fn assert_consistent(&self, slot: &SlotRef) {
        let client = self.state.pool.get().await.unwrap();
        let capacity: i32 = client
            .query_one("SELECT capacity FROM segments WHERE id = $1", &[&slot.id])
            .await
            .unwrap()
            .get(0);
        let rows = client
            .query(
                "SELECT patient_id, id, pool, seat_no FROM bookings
                  WHERE segment_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped')",
                &[&slot.id],
            )
            .await
            .unwrap();
        assert!(rows.len() <= usize::try_from(capacity).unwrap(), "oversold");
        for (pool, seats) in self.state.settings.policy.pool_split(capacity) {
            let used = rows.iter().filter(|r| r.get::<_, String>(2) == pool).count();
            assert!(used <= usize::try_from(seats).unwrap(), "pool {pool} oversold");
        }
        let pg: HashMap<String, String> = rows
            .iter()
            .map(|r| {
                let (patient, id, pool, seat): (Uuid, Uuid, String, i32) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                (patient.to_string(), format!("{id}|{pool}|{seat}"))
            })
            .collect();
        let keys = self.segment_keys(slot).await;
        let mut conn = self.state.redis.clone();
        let (holders, free): (HashMap<String, String>, i64) = redis::pipe()
            .hgetall(&keys.holders)
            .llen(&keys.free)
            .query_async(&mut conn)
            .await
            .unwrap();
        let (pools, meta): (HashMap<String, i64>, HashMap<String, String>) = redis::pipe()
            .hgetall(&keys.pools)
            .hgetall(&keys.meta)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            holders, pg,
            "Redis holders differ from PostgreSQL's live bookings"
        );
        assert_eq!(
            free + i64::try_from(rows.len()).unwrap(),
            i64::from(capacity),
            "free seats"
        );
        assert_eq!(pools.values().sum::<i64>(), free, "pool counts");
        for (pool, left) in &pools {
            let kept: i64 = meta
                .get(&format!("kept:{pool}"))
                .map_or(0, |n| n.parse().unwrap());
            assert!(
                (0..=*left).contains(&kept),
                "pool {pool} keeps {kept} of {left} seats"
            );
        }
    }
}

/// A booking request of `patient` for `slot` through `channel`, as a
/// channel sends it (no family doctor, waitlist, offer or draw).
/// A won hold for `seat` of `slot`, as the hold script would give it to a
/// new patient, its event's payload naming the seat.
pub fn won(h: &Hospital, slot: &SlotRef, seat: i32) -> BookingToWrite {
    let id = Uuid::now_v7();
    BookingToWrite {
        id,
        segment_id: slot.id,
        patient_id: Uuid::new_v4(),
        channel: Channel::Wechat,
        seat_no: seat,
        pool: "common".into(),
        visit_no: seat,
        pickup_code: format!("{seat:06}"),
        idempotency_key: Uuid::new_v4().simple().to_string(),
        owner_app: None,
        hold_deadline: h.clock.now() + TimeDelta::minutes(10),
        event_id: Uuid::now_v7(),
        aggregate_id: BookingRef::new(h.state.hospital.clone(), id).to_string(),
        payload: serde_json::json!({ "seat": seat }),
    }
}

pub fn book_request(slot: &SlotRef, patient: Uuid, channel: Channel, referral: Option<&str>) -> BookRequest {
    BookRequest {
        referral_id: referral.map(str::to_owned),
        ..BookRequest::new(slot.clone(), patient, channel)
    }
}

pub fn code(e: &SlotError) -> &'static str {
    e.code()
}
