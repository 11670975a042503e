//! Random interleavings of everything that changes a slot (book, pay,
//! cancel, expire, join a waitlist, check in, add capacity, lose Redis and
//! rebuild) across several schedules and persons. After every step:
//! bookings per segment and per pool never exceed capacity, every person
//! rule holds, and after reconciliation Redis agrees with PostgreSQL.

use std::collections::HashMap;

use jyt_cache::redis;
use jyt_domain::{BookingRef, Channel};
use proptest::prelude::*;
use slot_inventory::booking::lifecycle::{
    self, CancelRequest, CheckInRequest, ConfirmRequest, PaymentMethod,
};
use slot_inventory::booking::{cache, waitlist};
use slot_inventory::schedule::capacity::{self, CapacityChange};
use uuid::Uuid;

use crate::helpers::{Hospital, beijing, sched};

const CAPACITY: i32 = 4;
const PERSONS: usize = 4;
/// Two segments of each: an expert and a general clinic of one department
/// (fees: holds), and CT (free: confirmed at once).
const SCHEDULES: [usize; 3] = [sched::CARDIO_EXPERT_AM, sched::CARDIO_GENERAL_AM, sched::CT_AM];
const CHANNELS: [Channel; 3] = [Channel::Wechat, Channel::Kiosk, Channel::App];

#[derive(Debug, Clone)]
enum Op {
    Book {
        person: usize,
        segment: usize,
        channel: usize,
    },
    Pay {
        booking: usize,
    },
    Cancel {
        booking: usize,
    },
    /// Eleven minutes pass and the expiry sweeper runs.
    Expire,
    Join {
        person: usize,
        schedule: usize,
    },
    CheckIn {
        booking: usize,
    },
    AddCapacity {
        segment: usize,
    },
    /// Redis loses everything of this hospital; the service rebuilds it.
    LoseRedis,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PERSONS, 0..6usize, 0..3usize).prop_map(|(person, segment, channel)| Op::Book { person, segment, channel }),
        2 => (0..32usize).prop_map(|booking| Op::Pay { booking }),
        2 => (0..32usize).prop_map(|booking| Op::Cancel { booking }),
        2 => Just(Op::Expire),
        2 => (0..PERSONS, 0..3usize).prop_map(|(person, schedule)| Op::Join { person, schedule }),
        1 => (0..32usize).prop_map(|booking| Op::CheckIn { booking }),
        1 => (0..6usize).prop_map(|segment| Op::AddCapacity { segment }),
        1 => Just(Op::LoseRedis),
    ]
}

struct World {
    h: Hospital,
    persons: Vec<Uuid>,
    bookings: Vec<(BookingRef, Uuid, String)>,
    segments: Vec<Uuid>,
}

impl World {
    fn segment_ref(&self, i: usize) -> jyt_domain::SlotRef {
        jyt_domain::SlotRef::new(self.h.state.hospital.clone(), self.segments[i])
    }

    async fn apply(&mut self, op: &Op) {
        let state = &self.h.state;
        // Every refusal must be one of the domain's answers, never a 5xx.
        let allowed = |e: &slot_inventory::SlotError| {
            assert!(
                !e.code().contains("UNAVAILABLE") && e.code() != "INTERNAL_ERROR",
                "{op:?} failed: {e}"
            );
        };
        match *op {
            Op::Book {
                person,
                segment,
                channel,
            } => {
                match self
                    .h
                    .book(
                        &self.segment_ref(segment),
                        self.persons[person],
                        CHANNELS[channel],
                    )
                    .await
                {
                    Ok(b) => self.bookings.push((b.booking_id, b.patient_id, b.pickup_code)),
                    Err(e) => allowed(&e),
                }
            }
            Op::Pay { booking } => {
                if let Some((id, ..)) = self.bookings.get(booking) {
                    let req = ConfirmRequest {
                        payment_reference: format!("tx-{}", id.id.simple()),
                        payment_method: PaymentMethod::SelfPay,
                        amount_fen: None,
                    };
                    if let Err(e) = lifecycle::confirm(state, id, &req).await {
                        allowed(&e);
                    }
                }
            }
            Op::Cancel { booking } => {
                if let Some((id, patient, _)) = self.bookings.get(booking)
                    && let Err(e) =
                        lifecycle::cancel(state, id, &CancelRequest { patient_id: *patient }).await
                {
                    allowed(&e);
                }
            }
            Op::Expire => {
                self.h.advance(11);
                lifecycle::expire_holds(state).await.unwrap();
            }
            Op::Join { person, schedule } => {
                let schedule = self.h.schedules[SCHEDULES[schedule]].schedule_id;
                let req = waitlist::JoinRequest {
                    patient_id: self.persons[person],
                    // Waiters of several channels, so pools decide who is served.
                    channel: CHANNELS[person % CHANNELS.len()],
                    owner_app: None,
                };
                if let Err(e) = waitlist::join(state, schedule, &req).await {
                    allowed(&e);
                }
            }
            Op::CheckIn { booking } => {
                if let Some((id, _, code)) = self.bookings.get(booking) {
                    let req = CheckInRequest {
                        pickup_code: code.clone(),
                        patient_id: None,
                    };
                    if let Err(e) = lifecycle::check_in(state, id, &req).await {
                        allowed(&e);
                    }
                }
            }
            Op::AddCapacity { segment } => {
                let client = state.pool.get().await.unwrap();
                let current: i32 = client
                    .query_one(
                        "SELECT capacity FROM segments WHERE id = $1",
                        &[&self.segments[segment]],
                    )
                    .await
                    .unwrap()
                    .get(0);
                drop(client);
                capacity::set_segment_capacity(
                    state,
                    self.segments[segment],
                    &CapacityChange {
                        capacity: current + 1,
                    },
                )
                .await
                .unwrap();
            }
            Op::LoseRedis => {
                let mut conn = state.redis.clone();
                let pattern = format!("{}*", state.settings.redis.key_prefix);
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    redis::cmd("DEL")
                        .arg(&keys)
                        .query_async::<()>(&mut conn)
                        .await
                        .unwrap();
                }
                cache::check_generation(state).await.unwrap();
                assert!(state.cache.is_ready());
            }
        }
        // Whatever the step, anyone waiting where a seat is free is served
        // (the sweeper's pass), once the passes that freed seats started
        // (in tasks of their own) have ended.
        self.h.passes_done().await;
        waitlist::promote_all(state).await.unwrap();
    }

    async fn check(&self, after: &Op) {
        let state = &self.h.state;
        let client = state.pool.get().await.unwrap();
        let live = "status NOT IN ('cancelled', 'expired', 'stopped')";
        for segment in &self.segments {
            let capacity: i32 = client
                .query_one("SELECT capacity FROM segments WHERE id = $1", &[segment])
                .await
                .unwrap()
                .get(0);
            let rows = client
                .query(
                    &format!(
                        "SELECT patient_id, id, pool, seat_no FROM bookings WHERE segment_id = $1 AND {live}"
                    ),
                    &[segment],
                )
                .await
                .unwrap();
            assert!(
                rows.len() <= usize::try_from(capacity).unwrap(),
                "oversold after {after:?}"
            );
            if capacity == CAPACITY {
                let split = state.settings.policy.pool_split(capacity);
                for (pool, seats) in split {
                    let used = rows.iter().filter(|r| r.get::<_, String>(2) == pool).count();
                    assert!(
                        used <= usize::try_from(seats).unwrap(),
                        "pool {pool} oversold after {after:?}"
                    );
                }
            }
            // Redis agrees with PostgreSQL (after reconciliation; a segment
            // nobody has touched yet is loaded as its first booking would).
            cache::reconcile(state).await.unwrap();
            cache::load_segment(state, *segment).await.unwrap();
            let info = cache::segment_info(state, *segment).await.unwrap();
            let keys = state.keys.segment(&info);
            let mut conn = state.redis.clone();
            let holders: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&keys.holders)
                .query_async(&mut conn)
                .await
                .unwrap();
            let pg: HashMap<String, String> = rows
                .iter()
                .map(|r| {
                    let (patient, id, pool, seat): (Uuid, Uuid, String, i32) =
                        (r.get(0), r.get(1), r.get(2), r.get(3));
                    (patient.to_string(), format!("{id}|{pool}|{seat}"))
                })
                .collect();
            assert_eq!(holders, pg, "Redis holders differ after {after:?}");
            let free: i64 = redis::cmd("LLEN")
                .arg(&keys.free)
                .query_async(&mut conn)
                .await
                .unwrap();
            let pools: HashMap<String, i64> = redis::cmd("HGETALL")
                .arg(&keys.pools)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(
                free + i64::try_from(rows.len()).unwrap(),
                i64::from(capacity),
                "free seats after {after:?}"
            );
            assert_eq!(pools.values().sum::<i64>(), free, "pool counts after {after:?}");
            let meta: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&keys.meta)
                .query_async(&mut conn)
                .await
                .unwrap();
            for (pool, left) in &pools {
                let kept: i64 = meta
                    .get(&format!("kept:{pool}"))
                    .map_or(0, |n| n.parse().unwrap());
                assert!(
                    (0..=*left).contains(&kept),
                    "pool {pool} keeps {kept} of {left} seats for the waitlist after {after:?}"
                );
            }
        }
        // Person rules: per day at most 2, one per department, one per schedule.
        for person in &self.persons {
            let rows = client
                .query(
                    &format!(
                        "SELECT sch.id, sch.department_id FROM bookings b JOIN schedules sch ON sch.id = b.schedule_id
                          WHERE b.patient_id = $1 AND b.{live}"
                    ),
                    &[person],
                )
                .await
                .unwrap();
            assert!(rows.len() <= 2, "daily limit broken after {after:?}");
            let mut departments: Vec<Uuid> = rows.iter().map(|r| r.get(1)).collect();
            departments.sort_unstable();
            departments.dedup();
            assert_eq!(
                departments.len(),
                rows.len(),
                "department rule broken after {after:?}"
            );
        }
    }
}

#[test]
fn random_interleavings_keep_every_invariant() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases: 10,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..28))| {
        runtime.block_on(async {
            // 14:20 the day before: expiries cross the 15:00 pool merge and
            // cancellation deadline.
            let h = Hospital::start(beijing(1, 14, 20), CAPACITY, &[]).await;
            let segments = SCHEDULES
                .iter()
                .flat_map(|s| h.schedules[*s].segment_ids[..2].to_vec())
                .collect();
            let mut world = World {
                persons: (0..PERSONS).map(|_| Uuid::new_v4()).collect(),
                bookings: Vec::new(),
                segments,
                h,
            };
            for op in &ops {
                world.apply(op).await;
                world.check(op).await;
            }
        });
    });
}
