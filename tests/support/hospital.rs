//! One hospital's slot-inventory, started for a test, and what the tests
//! read from its PostgreSQL and Redis.

use std::collections::HashMap;

use jyt_cache::redis;
use jyt_domain::time::Clock;
use jyt_domain::{HospitalId, SlotRef};
use slot_inventory::AppState;
use uuid::Uuid;

use crate::{sources, visit_day};

/// A running slot-inventory for one hospital.
pub struct TestHospital {
    pub id: HospitalId,
    pub base_url: String,
    pub database_url: String,
    pub state: AppState,
}

impl TestHospital {
    pub async fn spawn(id: &str, redis_prefix: &str) -> Self {
        Self::spawn_with(id, redis_prefix, &[], Clock::System).await
    }

    /// With `extra` settings (keys after `JYT_SLOT_INVENTORY__`) and time
    /// from `clock`: a [`Clock::manual`] lets a test move to 08:30 at once.
    pub async fn spawn_with(id: &str, redis_prefix: &str, extra: &[(&str, &str)], clock: Clock) -> Self {
        let database_url = jyt_testkit::fresh_database(&format!("slot{id}")).await;
        let p = "JYT_SLOT_INVENTORY__";
        let mut env = vec![
            (format!("{p}HOSPITAL__ID"), id.to_owned()),
            (format!("{p}HOSPITAL__NAME"), format!("Test hospital {id}")),
            (format!("{p}HTTP__PORT"), "0".to_owned()),
            (format!("{p}HTTP__WORKERS"), "2".to_owned()),
            (format!("{p}POSTGRES__URL"), database_url.clone()),
            (format!("{p}REDIS__URLS"), jyt_testkit::redis_url()),
            (format!("{p}REDIS__KEY_PREFIX"), redis_prefix.to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (format!("{p}{k}"), (*v).to_owned())));
        let settings =
            slot_inventory::Settings::load_from(&sources(env)).expect("slot-inventory test settings");
        let app = slot_inventory::Application::build_with_clock(settings, clock)
            .await
            .expect("slot-inventory starts");
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        // The slot cache is prepared in the background and the service's
        // readiness waits for it (bookings meanwhile get 503): a test must
        // wait too, as a load balancer would, or its first booking races
        // the preparation (seen once in CI under a cold build's load).
        jyt_testkit::eventually(
            std::time::Duration::from_secs(30),
            "the hospital's slot cache to be ready",
            || async { state.cache.is_ready().then_some(()) },
        )
        .await;
        Self {
            id: id.parse().unwrap(),
            base_url,
            database_url,
            state,
        }
    }

    /// A client that calls this hospital directly as jyt's tools may: every
    /// request carries a valid internal token (`X-Internal-Token`).
    pub fn http(&self) -> reqwest::Client {
        let audience = jyt_signing::internal::hospital_audience(self.id.as_str());
        jyt_testkit::internal_client(&self.state.settings.internal_auth, &audience)
    }

    /// Seed a demo day ([`visit_day`], Asia/Shanghai) with `capacity` seats per
    /// segment; returns the first segment of each schedule.
    pub async fn seed_visit_day(&self, capacity: i32) -> Vec<SlotRef> {
        let stored = slot_inventory::seed::seed_demo_day(&self.state, visit_day(), capacity)
            .await
            .unwrap();
        stored
            .iter()
            .map(|s| SlotRef::new(self.id.clone(), s.segment_ids[0]))
            .collect()
    }

    async fn segment_keys(&self, segment: Uuid) -> slot_inventory::booking::hold::SegmentKeys {
        let info = slot_inventory::booking::cache::segment_info(&self.state, segment)
            .await
            .unwrap();
        self.state.keys.segment(&info)
    }

    /// Run SQL against this hospital's database (fault injection, checks).
    pub async fn sql(&self, sql: &str) {
        let client = self.state.pool.get().await.unwrap();
        client.batch_execute(sql).await.unwrap();
    }

    /// Live bookings of a segment and their distinct seats, from PostgreSQL.
    pub async fn live_bookings(&self, slot: &SlotRef) -> (i64, i64) {
        let client = self.state.pool.get().await.unwrap();
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT seat_no) FROM bookings
                  WHERE segment_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped')",
                &[&slot.id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// Segments where live bookings exceed capacity, or a seat number does:
    /// must always be empty.
    pub async fn oversold_segments(&self) -> Vec<Uuid> {
        let client = self.state.pool.get().await.unwrap();
        client
            .query(
                "SELECT seg.id FROM segments seg
                   LEFT JOIN bookings b ON b.segment_id = seg.id
                        AND b.status NOT IN ('cancelled', 'expired', 'stopped')
                  GROUP BY seg.id, seg.capacity
                 HAVING count(b.id) > seg.capacity OR coalesce(max(b.seat_no), 0) > seg.capacity",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// (free seats, holders) of a segment as Redis has them.
    pub async fn redis_segment(&self, slot: &SlotRef) -> (i64, HashMap<String, String>) {
        let keys = self.segment_keys(slot.id).await;
        let mut conn = self.state.redis.clone();
        let free: i64 = redis::cmd("LLEN")
            .arg(&keys.free)
            .query_async(&mut conn)
            .await
            .unwrap();
        let holders: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&keys.holders)
            .query_async(&mut conn)
            .await
            .unwrap();
        (free, holders)
    }

    /// Live bookings of a segment as patient id → booking id, from PostgreSQL.
    pub async fn pg_holders(&self, slot: &SlotRef) -> HashMap<String, String> {
        let client = self.state.pool.get().await.unwrap();
        client
            .query(
                "SELECT patient_id, id, pool, seat_no FROM bookings
                  WHERE segment_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped')",
                &[&slot.id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let (booking, pool, seat): (Uuid, String, i32) = (r.get(1), r.get(2), r.get(3));
                (
                    r.get::<_, Uuid>(0).to_string(),
                    format!("{booking}|{pool}|{seat}"),
                )
            })
            .collect()
    }

    /// Forget this hospital's segments in Redis, as if Redis restarted empty.
    pub async fn wipe_redis_segments(&self, slots: &[SlotRef]) {
        let mut conn = self.state.redis.clone();
        for slot in slots {
            let k = self.segment_keys(slot.id).await;
            redis::cmd("DEL")
                .arg(&k.meta)
                .arg(&k.free)
                .arg(&k.holders)
                .query_async::<()>(&mut conn)
                .await
                .unwrap();
        }
    }
}
