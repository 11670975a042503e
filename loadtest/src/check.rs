//! Correctness after a run, read straight from each hospital's PostgreSQL
//! and from Redis: no segment or pool above capacity, every booking a
//! client was told about is there in the state it was told, nothing booked
//! that no client was told about, Redis's holders equal PostgreSQL's live
//! bookings, and no 5xx (or unanswered request).

use std::collections::{HashMap, HashSet};

use jyt_cache::redis;
use serde::Serialize;
use uuid::Uuid;

use crate::city::{City, Lock, booking_uuid};
use crate::load::Sample;

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub seats: i64,
    pub live_bookings: i64,
    pub told_booked: usize,
    pub oversold_segments: usize,
    pub pool_overflows: usize,
    /// Told "booked" but missing from PostgreSQL or in another state.
    pub lost_bookings: usize,
    /// Live in PostgreSQL but no client was told (would follow a timeout).
    pub untold_bookings: usize,
    /// Segments whose Redis holders differ from PostgreSQL (`None`: the
    /// baseline keeps no holders in Redis).
    pub redis_mismatches: Option<usize>,
    pub server_errors: usize,
    pub unanswered: usize,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One segment's live bookings as PostgreSQL has them.
#[derive(Default)]
struct SegmentSeen {
    capacity: i32,
    live: i32,
    seats: HashSet<i32>,
    pools: HashMap<String, i32>,
    /// patient → `booking|pool|seat`, as Redis keeps its holders.
    holders: HashMap<String, String>,
}

const LIVE: &str = "status NOT IN ('cancelled', 'expired', 'stopped')";

/// `expected` overrides what a client was told where the booking has
/// moved on since by itself (a hold expired, a no-show marked), keyed by
/// the booking's uuid; later samples override earlier ones.
#[expect(
    clippy::too_many_lines,
    reason = "one load-test scenario, its phases in order"
)]
pub async fn check<'a>(
    city: &City,
    samples: impl IntoIterator<Item = &'a Sample>,
    expected: &HashMap<Uuid, String>,
) -> anyhow::Result<CheckReport> {
    let mut r = CheckReport::default();
    let mut told: HashMap<Uuid, String> = HashMap::new();
    let mut server_codes: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for s in samples {
        let o = &s.outcome;
        if o.status >= 500 {
            r.server_errors += 1;
            *server_codes
                .entry(format!("{} {}", o.status, o.code))
                .or_insert(0) += 1;
        }
        if o.status == 0 {
            r.unanswered += 1;
        }
        if let Some(b) = &o.booked {
            match booking_uuid(&b.id) {
                Some(u) => {
                    told.insert(u, b.status.clone());
                }
                None => r
                    .problems
                    .push(format!("an answer with a bad booking id: {:?}", b.id)),
            }
        }
    }
    r.told_booked = told.len();
    for (id, status) in expected {
        if let Some(t) = told.get_mut(id) {
            t.clone_from(status);
        }
    }
    let mut seen: HashSet<Uuid> = HashSet::new();
    for h in &city.hospitals {
        let client = h.state.pool.get().await?;
        r.seats += client
            .query_one("SELECT coalesce(sum(capacity), 0)::bigint FROM segments", &[])
            .await?
            .get::<_, i64>(0);
        let rows = client
            .query(
                &format!(
                    "SELECT b.id, b.status, b.segment_id, b.pool, b.seat_no, b.patient_id, seg.capacity,
                            b.{LIVE}
                       FROM bookings b JOIN segments seg ON seg.id = b.segment_id"
                ),
                &[],
            )
            .await?;
        // Reading Redis below may need a connection of this pool (one, for
        // a city of processes).
        drop(client);
        let mut segs: HashMap<Uuid, SegmentSeen> = HashMap::new();
        for row in &rows {
            let (id, status, seg, pool, seat, patient, capacity, live): (
                Uuid,
                String,
                Uuid,
                String,
                i32,
                Uuid,
                i32,
                bool,
            ) = (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
                row.get(6),
                row.get(7),
            );
            seen.insert(id);
            match told.get(&id) {
                Some(t) if *t != status => {
                    r.lost_bookings += 1;
                    r.problems
                        .push(format!("booking {id} was told {t}, PostgreSQL has {status}"));
                }
                Some(_) => {}
                None if live => r.untold_bookings += 1,
                None => {}
            }
            if !live {
                continue;
            }
            r.live_bookings += 1;
            let e = segs.entry(seg).or_insert_with(|| SegmentSeen {
                capacity,
                ..SegmentSeen::default()
            });
            e.live += 1;
            if seat > capacity || !e.seats.insert(seat) {
                r.problems
                    .push(format!("segment {seg}: seat {seat} out of range or twice"));
            }
            *e.pools.entry(pool.clone()).or_insert(0) += 1;
            e.holders
                .insert(patient.to_string(), format!("{id}|{pool}|{seat}"));
        }
        for (
            seg,
            SegmentSeen {
                capacity,
                live,
                pools,
                ..
            },
        ) in &segs
        {
            if live > capacity {
                r.oversold_segments += 1;
                r.problems.push(format!(
                    "segment {seg}: {live} live bookings for {capacity} seats"
                ));
            }
            let split: HashMap<&str, i32> = h
                .state
                .settings
                .policy
                .pool_split(*capacity)
                .into_iter()
                .collect();
            for (pool, n) in pools {
                let size = split.get(pool.as_str()).copied().unwrap_or(0);
                if *n > size {
                    r.pool_overflows += 1;
                    r.problems.push(format!(
                        "segment {seg}: pool {pool} has {n} bookings for {size} seats"
                    ));
                }
            }
        }
        if city.lock == Lock::Redis {
            let mut mismatches = r.redis_mismatches.unwrap_or(0);
            let mut conn = h.state.redis.clone();
            for seg in &h.segments {
                let info = slot_inventory::booking::cache::segment_info(&h.state, seg.slot.id)
                    .await
                    .map_err(|e| anyhow::anyhow!("segment info: {e}"))?;
                let keys = h.state.keys.segment(&info);
                let in_redis: HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(&keys.holders)
                    .query_async(&mut conn)
                    .await?;
                let empty = HashMap::new();
                let in_pg = segs.get(&seg.slot.id).map_or(&empty, |e| &e.holders);
                if &in_redis != in_pg {
                    mismatches += 1;
                    r.problems.push(format!(
                        "segment {}: Redis holds {} patients, PostgreSQL {}",
                        seg.slot.id,
                        in_redis.len(),
                        in_pg.len()
                    ));
                }
            }
            r.redis_mismatches = Some(mismatches);
        }
    }
    for id in told.keys() {
        if !seen.contains(id) {
            r.lost_bookings += 1;
            r.problems
                .push(format!("booking {id} was told booked, PostgreSQL has no row"));
        }
    }
    if r.server_errors > 0 {
        r.problems
            .push(format!("{} answers were 5xx: {server_codes:?}", r.server_errors));
    }
    if r.unanswered > 0 {
        r.problems
            .push(format!("{} requests got no answer", r.unanswered));
    }
    if r.problems.len() > 20 {
        let more = r.problems.len() - 20;
        r.problems.truncate(20);
        r.problems.push(format!("... and {more} more"));
    }
    Ok(r)
}
