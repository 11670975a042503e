//! The baseline the load test measures the design against: the same
//! booking (release time, stopped clinics, person rules, channel pools,
//! seat, visit number, held or confirmed, outbox event) decided by
//! PostgreSQL row locks alone, as a team without Redis would build it.
//! Every attempt, winner or loser, takes a connection and queues on the
//! segment's row lock; the visit number comes from the schedule's row.
//! Selected with `booking.lock = "postgres"`; never used in production.

use chrono::TimeDelta;
use jyt_db::Prepared;
use jyt_domain::{BookingRef, IdempotencyKey};
use uuid::Uuid;

use super::BookRequest;
use super::events::{self, EventKind};
use super::queries::{self, NewBooking, SegmentInfo};
use super::{BookOutcome, same_request};
use crate::error::SlotError;
use crate::state::AppState;

pub async fn book(
    state: &AppState,
    req: &BookRequest,
    key: &IdempotencyKey,
    info: &SegmentInfo,
) -> Result<BookOutcome, SlotError> {
    let now = state.clock.now();
    let policy = state.policy.get();
    let mut client = state.pool.get().await?;
    if let Some(existing) =
        queries::get_booking_by_idempotency_key(&client, &state.hospital, req.patient_id, key.as_str())
            .await?
    {
        return same_request(existing, req);
    }
    let tx = client.transaction().await?;
    // One person's attempts one at a time, so the person rules hold.
    tx.execute_cached(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))",
        &[&req.patient_id.to_string()],
    )
    .await?;
    // Every attempt for this segment queues here.
    let row = tx
        .query_one_cached(
            "SELECT seg.capacity, sch.status = 'open', sch.release_at
               FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id
              WHERE seg.id = $1 FOR UPDATE OF seg",
            &[&info.segment_id],
        )
        .await?;
    let (capacity, open, release_at): (i32, bool, chrono::DateTime<chrono::Utc>) =
        (row.get(0), row.get(1), row.get(2));
    if now < release_at {
        return Err(SlotError::NotYetReleased(release_at));
    }
    if !open {
        return Err(SlotError::ScheduleStopped);
    }

    check_person_rules(&tx, state, req, info).await?;
    // The referral rule of hold.lua, on the locked referral row.
    if let Some(raw) = req.referral_id.as_deref() {
        let id = super::referral::parse_id(raw)?;
        super::referral::check_for_booking(state, &tx, id, req.patient_id, &info.department).await?;
    }
    let (pool, seat) = choose_seat(&tx, state, req, info, capacity).await?;
    let pool = pool.as_str();

    // The visit number: the schedule's row is the hot row of this design.
    let visit_no: i32 = tx
        .query_one_cached(
            "WITH locked AS (SELECT id FROM schedules WHERE id = $1 FOR UPDATE)
             SELECT coalesce(max(b.visit_no), 0) + 1 FROM locked LEFT JOIN bookings b ON b.schedule_id = locked.id",
            &[&info.schedule_id],
        )
        .await?
        .get(0);
    let id = Uuid::now_v7();
    let code = format!("{:06}", rand::Rng::random_range(&mut rand::rng(), 0..1_000_000));
    let inserted = queries::insert_booking(
        &tx,
        &NewBooking {
            id,
            segment_id: info.segment_id,
            patient_id: req.patient_id,
            channel: req.channel,
            seat_no: seat,
            pool,
            visit_no,
            pickup_code: &code,
            idempotency_key: key.as_str(),
            referral_id: req.referral_id.as_deref(),
            owner_app: req.owner_app.as_deref(),
            hold_deadline: now + TimeDelta::minutes(i64::from(policy.hold_minutes)),
        },
    )
    .await;
    match inserted {
        Ok(Some(_)) => {}
        Ok(None) => return Err(SlotError::SlotSoldOut),
        Err(e) if jyt_db::unique_violation(&e) == Some("bookings_idempotency_uq") => {
            drop(tx);
            let client = state.pool.get().await?;
            return match queries::get_booking_by_idempotency_key(
                &client,
                &state.hospital,
                req.patient_id,
                key.as_str(),
            )
            .await?
            {
                Some(existing) => same_request(existing, req),
                None => Err(SlotError::RequestInProgress),
            };
        }
        Err(e) => return Err(e.into()),
    }
    let stored = queries::get_booking(&tx, &state.hospital, id)
        .await?
        .ok_or_else(|| SlotError::BookingNotFound(id.to_string()))?;
    let kind = if stored.booking.hold_deadline.is_some() {
        EventKind::Held
    } else {
        EventKind::Confirmed
    };
    events::append(&tx, kind, &stored.booking, serde_json::json!({})).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(BookOutcome {
        booking: stored.booking,
        replayed: false,
    })
}

/// The person rules, read from the patient's live bookings that day (the
/// patient's advisory lock is held, so they cannot change meanwhile).
pub(crate) async fn check_person_rules(
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    state: &AppState,
    req: &BookRequest,
    info: &SegmentInfo,
) -> Result<(), SlotError> {
    let policy = state.policy.get();
    let mine = tx
        .query_cached(
            "SELECT b.id, b.segment_id, b.schedule_id, dep.external_id
                   FROM bookings b JOIN schedules sch ON sch.id = b.schedule_id
                   JOIN departments dep ON dep.id = sch.department_id
                  WHERE b.patient_id = $1 AND sch.visit_date = $2 AND b.live",
            &[&req.patient_id, &info.visit_date],
        )
        .await?;
    if let Some(r) = mine.iter().find(|r| r.get::<_, Uuid>(1) == info.segment_id) {
        return Err(SlotError::AlreadyBooked(BookingRef::new(
            state.hospital.clone(),
            r.get(0),
        )));
    }
    if mine.iter().any(|r| r.get::<_, Uuid>(2) == info.schedule_id) {
        return Err(SlotError::ScheduleAlreadyBooked);
    }
    let same_department = mine
        .iter()
        .filter(|r| r.get::<_, String>(3) == info.department)
        .count();
    if same_department >= usize::try_from(policy.max_per_person_per_department_per_day).unwrap_or(1) {
        return Err(SlotError::DepartmentDailyLimit);
    }
    if mine.len() >= usize::try_from(policy.max_per_person_per_day).unwrap_or(2) {
        return Err(SlotError::DailyLimit);
    }
    Ok(())
}

/// The pool and seat this attempt gets, under the segment's row lock:
/// the channel's own pool, then common, then (after the merge time) any.
async fn choose_seat(
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    state: &AppState,
    req: &BookRequest,
    info: &SegmentInfo,
    capacity: i32,
) -> Result<(String, i32), SlotError> {
    let now = state.clock.now();
    let policy = state.policy.get();
    let live = tx
        .query_cached(
            "SELECT seat_no, pool FROM bookings WHERE segment_id = $1 AND live",
            &[&info.segment_id],
        )
        .await?;
    let left = |pool: &str, share: i32| {
        share
            - i32::try_from(live.iter().filter(|r| r.get::<_, String>(1) == pool).count()).unwrap_or(i32::MAX)
    };
    let split = policy.pool_split(capacity);
    let remaining: Vec<(&str, i32)> = split.iter().map(|(p, n)| (*p, left(p, *n))).collect();
    let get = |pool: &str| remaining.iter().find(|(p, _)| *p == pool).map_or(0, |(_, n)| *n);
    let pool = if get(req.channel.as_str()) > 0 {
        Some(req.channel.as_str())
    } else if get("common") > 0 {
        Some("common")
    } else if now >= policy.pool_merge_at(info.visit_date) {
        remaining
            .iter()
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
            .map(|(p, _)| *p)
    } else {
        None
    };
    let taken: std::collections::HashSet<i32> = live.iter().map(|r| r.get(0)).collect();
    let seat = (1..=capacity).find(|s| !taken.contains(s));
    let (Some(pool), Some(seat)) = (pool, seat) else {
        return Err(SlotError::SlotSoldOut);
    };
    Ok((pool.to_owned(), seat))
}
