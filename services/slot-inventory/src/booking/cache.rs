//! Keeping Redis a faithful copy of PostgreSQL: the generation marker that
//! tells a restarted (empty) Redis apart, the full rebuild it triggers, and
//! the reconciler that frees holds whose PostgreSQL write never happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{Duration, NaiveTime, Utc};
use jyt_cache::redis;
use uuid::Uuid;

use super::hold::{HeldSeat, SeatGoes};
use super::queries;
use super::service::segment_info;
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
        super::service::warm_cache(state).await?;
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
    let segments = super::service::rebuild_cache(state).await?;
    rebuild_patient_days(state).await?;
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
pub async fn reconcile(state: &AppState) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let segments = queries::current_segment_ids(&client, state.clock.today()).await?;
    drop(client);
    let mut freed = 0;
    let mut conn = state.redis.clone();
    for segment in segments {
        let info = segment_info(state, segment).await?;
        let keys = state.keys.segment(&info);
        let holders: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&keys.holders)
            .query_async(&mut conn)
            .await?;
        let held: Vec<(Uuid, Uuid)> = holders
            .iter()
            .filter_map(|(patient, v)| {
                let booking = v.split('|').next()?;
                Some((Uuid::parse_str(patient).ok()?, Uuid::parse_str(booking).ok()?))
            })
            .collect();
        if held.is_empty() {
            continue;
        }
        let ids: Vec<Uuid> = held.iter().map(|(_, b)| *b).collect();
        let client = state.pool.get().await?;
        let existing = queries::existing_bookings(&client, &ids).await?;
        drop(client);
        for (patient, booking) in held {
            if existing.contains(&booking) || !older_than_grace(booking) {
                continue;
            }
            let released = state
                .scripts
                .release(
                    &state.redis,
                    &keys,
                    &state.keys.patient_day(patient, info.visit_date),
                    &state.keys.no_idempotency(),
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
