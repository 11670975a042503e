//! Keeping Redis a faithful copy of PostgreSQL: the generation marker that
//! tells a restarted (empty) Redis apart, the full rebuild it triggers, and
//! the reconciler that frees holds whose PostgreSQL write never happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, NaiveTime, Utc};
use jyt_cache::redis;
use uuid::Uuid;

use std::collections::HashSet;

use futures::StreamExt;
use jyt_domain::SlotRef;

use super::hold::{HeldSeat, SeatGoes, SegmentSnapshot};
use super::queries::{self, SegmentInfo};

/// Segments loaded at once by a rebuild or warm-up.
const REBUILD_CONCURRENCY: usize = 16;
use crate::error::SlotError;
use crate::state::AppState;

/// Whether this hospital's Redis copy is known good. Readiness reports it,
/// and bookings are refused (503) while it is false.
#[derive(Clone, Default)]
pub struct CacheHealth {
    ready: Arc<AtomicBool>,
    rebuilding: Arc<tokio::sync::Mutex<()>>,
}

impl CacheHealth {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// A hold older than this with no PostgreSQL row is an orphan (its process
/// died between the Lua script and the write).
pub const ORPHAN_GRACE_SECONDS: i64 = 30;

fn generation_key(state: &AppState) -> String {
    state.keys.generation()
}

/// Make sure Redis holds this hospital's state: if the generation marker is
/// missing (Redis restarted empty, or never loaded), rebuild everything from
/// PostgreSQL first; otherwise load only segments Redis lacks.
pub async fn ensure(state: &AppState) -> Result<(), SlotError> {
    let mut conn = state.redis.clone();
    let present: bool = redis::cmd("EXISTS")
        .arg(generation_key(state))
        .query_async(&mut conn)
        .await?;
    if present {
        warm_cache(state).await?;
        state.cache.ready.store(true, Ordering::Release);
        return Ok(());
    }
    rebuild(state).await.map(|_| ())
}

/// Rebuild if Redis has lost this hospital's generation marker (it
/// restarted empty, or was flushed) or was never prepared; readiness is
/// false until the rebuild is done.
pub async fn check_generation(state: &AppState) -> Result<(), SlotError> {
    let present = generation_present(state).await?;
    if !present || !state.cache.is_ready() {
        tracing::warn!(hospital = %state.hospital, "Redis lost the slot state; rebuilding from PostgreSQL");
        state.cache.ready.store(false, Ordering::Release);
        rebuild(state).await?;
    }
    Ok(())
}

/// Start a rebuild in the background unless one is running.
pub fn kick_rebuild(state: &AppState) {
    if state.cache.rebuilding.try_lock().is_ok() {
        let rebuilding = state.clone();
        tokio::spawn(async move {
            if let Err(e) = check_generation(&rebuilding).await {
                tracing::error!(error = %e, "rebuilding the slot cache failed");
            }
        });
    }
}

pub async fn generation_present(state: &AppState) -> Result<bool, SlotError> {
    let mut conn = state.redis.clone();
    Ok(redis::cmd("EXISTS")
        .arg(generation_key(state))
        .query_async(&mut conn)
        .await?)
}

/// Rebuild from PostgreSQL (single flight); bookings wait with 503
/// meanwhile. Returns how many segments were loaded (0 when another
/// rebuild was already running).
pub async fn rebuild(state: &AppState) -> Result<usize, SlotError> {
    let Ok(_turn) = state.cache.rebuilding.try_lock() else {
        // Someone else is rebuilding right now.
        return Ok(0);
    };
    state.cache.ready.store(false, Ordering::Release);
    let segments = rebuild_cache(state).await?;
    rebuild_patient_days(state).await?;
    super::referral::reload_all(state).await?;
    let mut conn = state.redis.clone();
    redis::cmd("SET")
        .arg(generation_key(state))
        .arg(Uuid::now_v7().to_string())
        .query_async::<()>(&mut conn)
        .await?;
    state.cache.ready.store(true, Ordering::Release);
    tracing::info!(segments, hospital = %state.hospital, "Redis rebuilt from PostgreSQL");
    Ok(segments)
}

/// Each patient's day (bookings in total, per department, per schedule),
/// recounted from PostgreSQL.
async fn rebuild_patient_days(state: &AppState) -> Result<(), SlotError> {
    let client = state.pool.get().await?;
    let rows = queries::patient_days(&client, state.clock.today()).await?;
    drop(client);
    let mut days: HashMap<(Uuid, chrono::NaiveDate), Vec<(String, i64)>> = HashMap::new();
    for (patient, date, dept, schedule, n) in rows {
        let fields = days.entry((patient, date)).or_default();
        fields.push(("total".to_owned(), n));
        fields.push((format!("dept:{dept}"), n));
        fields.push((format!("sch:{schedule}"), n));
    }
    let now = state.clock.now();
    let mut conn = state.redis.clone();
    for ((patient, date), fields) in days {
        let key = state.keys.patient_day(patient, date);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        for (field, n) in fields {
            pipe.hincr(&key, field, n).ignore();
        }
        let forget_at = jyt_domain::time::at(date + Duration::days(2), NaiveTime::MIN);
        pipe.expire(&key, (forget_at - now).num_seconds().max(60))
            .ignore();
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

/// Free Redis holds that have no PostgreSQL booking after the grace period.
/// Returns how many were freed.
///
/// The holds old enough to be orphans, from every current segment, are
/// checked against PostgreSQL in one read: a pass used to read once per
/// segment with holders (78 reads per hospital every 15 s in peak-day).
pub async fn reconcile(state: &AppState) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let segments = queries::current_segment_ids(&client, state.clock.today()).await?;
    drop(client);
    let mut conn = state.redis.clone();
    // (segment, patient, booking) of every hold past the grace period.
    let mut suspects: Vec<(Uuid, Uuid, Uuid)> = Vec::new();
    for segment in segments {
        let info = segment_info(state, segment).await?;
        let keys = state.keys.segment(&info);
        let holders: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&keys.holders)
            .query_async(&mut conn)
            .await?;
        suspects.extend(holders.iter().filter_map(|(patient, v)| {
            let booking = Uuid::parse_str(v.split('|').next()?).ok()?;
            older_than_grace(booking).then_some((segment, Uuid::parse_str(patient).ok()?, booking))
        }));
    }
    if suspects.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = suspects.iter().map(|(_, _, b)| *b).collect();
    let client = state.pool.get().await?;
    let existing: HashSet<Uuid> = queries::existing_bookings(&client, &ids)
        .await?
        .into_iter()
        .collect();
    drop(client);
    let mut freed = 0;
    for (segment, patient, booking) in suspects {
        if existing.contains(&booking) {
            continue;
        }
        let info = segment_info(state, segment).await?;
        let keys = state.keys.segment(&info);
        let released = state
            .scripts
            .release(
                &state.redis,
                &keys,
                &state.keys.patient_day(patient, info.visit_date),
                &state.keys.no_idempotency(),
                // An orphan's referral (if any) is unknown here; the
                // next rebuild recounts it from PostgreSQL.
                &state.keys.referral(None),
                &HeldSeat {
                    patient,
                    booking_id: booking,
                },
                SeatGoes::OnSale,
            )
            .await?;
        if released {
            tracing::warn!(%booking, %segment, "freed an orphan hold with no booking in PostgreSQL");
            freed += 1;
        }
    }
    Ok(freed)
}

/// Booking ids are UUIDv7: their first 48 bits are the creation time in ms.
fn older_than_grace(booking: Uuid) -> bool {
    let bytes = booking.as_bytes();
    let mut ms: i64 = 0;
    for b in &bytes[..6] {
        ms = (ms << 8) | i64::from(*b);
    }
    Utc::now().timestamp_millis() - ms > ORPHAN_GRACE_SECONDS * 1000
}

/// The segment's fixed facts, from the in-process directory or PostgreSQL.
pub async fn segment_info(state: &AppState, segment: Uuid) -> Result<SegmentInfo, SlotError> {
    if let Some(info) = state.segments.get(segment) {
        return Ok(info);
    }
    let client = state.pool.get().await?;
    let info = queries::segment_info(&client, segment)
        .await?
        .ok_or_else(|| SlotError::SlotNotFound(SlotRef::new(state.hospital.clone(), segment).to_string()))?;
    state.segments.insert(info.clone());
    Ok(info)
}

/// Load a segment's state from PostgreSQL into Redis, unless it is already
/// there. Concurrent callers for one segment wait for the first one's load
/// rather than each reading PostgreSQL.
pub async fn load_segment(state: &AppState, segment: Uuid) -> Result<bool, SlotError> {
    let gate = state.loads.gate(segment);
    let _turn = gate.lock().await;
    let result = load_segment_now(state, segment).await;
    state.loads.done(segment);
    result
}

async fn load_segment_now(state: &AppState, segment: Uuid) -> Result<bool, SlotError> {
    let info = segment_info(state, segment).await?;
    let keys = state.keys.segment(&info);
    let mut conn = state.redis.clone();
    let loaded: bool = redis::cmd("EXISTS")
        .arg(&keys.meta)
        .query_async(&mut conn)
        .await?;
    if loaded {
        return Ok(false);
    }
    let client = state.pool.get().await?;
    let Some(st) = queries::segment_state(&client, segment).await? else {
        return Err(SlotError::SlotNotFound(
            SlotRef::new(state.hospital.clone(), segment).to_string(),
        ));
    };
    let waiting_channels = if st.waiting > 0 {
        super::waitlist_queries::waiting_channels(&client, info.schedule_id).await?
    } else {
        Vec::new()
    };
    drop(client);
    let policy = state.policy.get();
    let taken: HashSet<i32> = st.live.iter().map(|(seat, ..)| *seat).collect();
    let free_seats: Vec<i32> = if st.open {
        (1..=st.capacity).filter(|s| !taken.contains(s)).collect()
    } else {
        Vec::new()
    };
    let mut pools = super::hold::pools_left(
        &policy,
        st.capacity,
        free_seats.len(),
        st.live.iter().map(|(.., p)| p.as_str()),
    );
    if !st.open {
        // A stopped schedule has nothing on sale.
        for (_, n) in &mut pools {
            *n = 0;
        }
    }
    let now = state.clock.now();
    let merge_at = policy.pool_merge_at(info.visit_date);
    // Free seats the waiting patients may take go to the waitlist first.
    let kept = super::hold::kept_for_line(
        &pools,
        usize::try_from(st.waiting).unwrap_or(0),
        &waiting_channels,
        now >= merge_at,
    );
    let mut meta: Vec<(String, String)> = [
        ("schedule", info.schedule_id.to_string()),
        ("dept", info.department.clone()),
        ("release_at", st.release_at.timestamp().max(0).to_string()),
        ("merge_at", merge_at.timestamp().to_string()),
        ("open", if st.open { "1" } else { "0" }.to_owned()),
        ("capacity", st.capacity.to_string()),
        ("lottery", if st.lottery_pending { "1" } else { "0" }.to_owned()),
        (
            "lottery_until",
            st.lottery_closes_at.timestamp().max(0).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    meta.extend(kept);
    let snapshot = SegmentSnapshot {
        meta,
        free_seats: if pools.iter().all(|(_, n)| *n == 0) {
            Vec::new()
        } else {
            free_seats
        },
        pools,
        holders: st
            .live
            .iter()
            .map(|(seat, patient, booking, pool)| (*patient, format!("{booking}|{pool}|{seat}")))
            .collect(),
        highest_visit_no: st.highest_visit_no,
        ttl_seconds: patient_day_ttl(&info, now),
    };
    let loaded = state.scripts.load(&state.redis, &keys, &snapshot).await?;
    if loaded {
        let mut conn = state.redis.clone();
        redis::cmd("HSET")
            .arg(state.keys.departments())
            .arg(&info.department)
            .arg(&info.department_name)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(loaded)
}

/// Replace a segment's Redis copy with PostgreSQL's (after its capacity or
/// its schedule changed).
pub async fn reload_segment(state: &AppState, segment: Uuid) -> Result<(), SlotError> {
    invalidate_segment(state, segment).await;
    load_segment(state, segment).await.map(|_| ())
}

/// Forget a segment's Redis copy so the next attempt rebuilds it; the
/// gateways drop their sold-out mark of it, so that attempt reaches us.
pub async fn invalidate_segment(state: &AppState, segment: Uuid) {
    let deleted = state.scripts.forget(&state.redis, &state.keys, segment).await;
    if let Err(e) = deleted {
        tracing::error!(error = %e, %segment, "could not invalidate a stale segment");
    }
}

/// Load every segment of today and later that Redis does not have yet, so
/// the release-time surge finds them ready. Run at start.
pub async fn warm_cache(state: &AppState) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let segments = queries::current_segment_ids(&client, state.clock.today()).await?;
    drop(client);
    let mut loaded = 0;
    for segment in &segments {
        if load_segment(state, *segment).await? {
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Rebuild this hospital's Redis copy from PostgreSQL: every segment of
/// today and later is forgotten and loaded again, and the expiry index of
/// unpaid holds is restored. (Older segments expire by themselves.) Segment
/// ids come from PostgreSQL rather than a key `SCAN`, which a Redis Cluster
/// would answer for one node only. Returns how many segments were loaded.
pub async fn rebuild_cache(state: &AppState) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let segments = queries::current_segment_ids(&client, state.clock.today()).await?;
    let holds = queries::open_holds(&client, state.clock.today()).await?;
    drop(client);
    let mut conn = state.redis.clone();
    for segment in &segments {
        let info = segment_info(state, *segment).await?;
        let keys = state.keys.segment(&info);
        state.scripts.forget(&state.redis, &state.keys, *segment).await?;
        redis::cmd("DEL")
            .arg(&keys.availability)
            .arg(&keys.availability_shares)
            .query_async::<()>(&mut conn)
            .await?;
    }
    // Several loads in flight: a rebuild during a surge must not take a
    // round trip per segment in turn while bookings wait with 503.
    let loads: Vec<Result<bool, SlotError>> = futures::stream::iter(segments.clone())
        .map(|segment| {
            let state = state.clone();
            async move { load_segment(&state, segment).await }
        })
        .buffer_unordered(REBUILD_CONCURRENCY)
        .collect()
        .await;
    for load in loads {
        load?;
    }
    if !holds.is_empty() {
        let mut pipe = redis::pipe();
        for (booking, deadline) in &holds {
            pipe.zadd(state.keys.holds(), booking.to_string(), deadline.timestamp())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(segments.len())
}

/// How long a patient's day counts live in Redis: until two days after the visit.
pub(crate) fn patient_day_ttl(info: &SegmentInfo, now: DateTime<Utc>) -> i64 {
    let forget_at = jyt_domain::time::at(info.visit_date + Duration::days(2), NaiveTime::MIN);
    (forget_at - now).num_seconds()
}
