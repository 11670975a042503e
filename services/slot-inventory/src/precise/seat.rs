//! The 加号 seat of a match: one seat added to the last segment of the
//! expert's next released session, and held for the matched patient in
//! the same PostgreSQL transaction as the capacity change, so the seat
//! exists only as theirs: no ordinary booking and no waitlist promotion
//! can take it (the waitlist gets no "new seat" to keep, the line is
//! exactly as long and as served as before). Redis then reloads the
//! segment from PostgreSQL, as after any capacity change, and learns the
//! patient's day and the hold's deadline.
//!
//! The hold is announced as `booking.offered` (detail
//! `precise_submission_id`): the gateway notifies the patient's app, which
//! pays it like any hold; unpaid, it expires like any hold.
//!
//! No released session of the doctor with a segment still to begin (or
//! the patient's own limits forbid each one): the submission stays
//! `matched` and is seated when the hospital publishes one (after its
//! publish, and by the sweeper every second).

use chrono::{DateTime, Utc};
use jyt_cache::redis;
use jyt_db::Prepared;
use jyt_domain::{BookingRef, Channel, SlotRef};
use uuid::Uuid;

use super::queries;
use crate::booking::cache::{patient_day_ttl, reload_segment, segment_info};
use crate::booking::events::{self, EventKind};
use crate::booking::hold::pools_left;
use crate::booking::queries::{self as booking_queries, NewBooking, SegmentInfo};
use crate::booking::{BookRequest, pg_lock};
use crate::error::SlotError;
use crate::schedule::capacity::{CapacityChanged, MAX_SEGMENT_CAPACITY, append_capacity_changed};
use crate::state::AppState;

/// Seat a matched submission; answers the held booking, or `None` when it
/// stays matched (no session to add a seat to yet) or was seated before.
pub async fn seat(state: &AppState, submission: Uuid) -> Result<Option<BookingRef>, SlotError> {
    let client = state.pool.get().await?;
    let Some(matched) = queries::matched_for_update(&client, submission).await? else {
        return Ok(None);
    };
    let segments =
        queries::next_sessions(&client, matched.doctor, state.clock.today(), state.clock.now()).await?;
    drop(client);
    for segment in segments {
        match seat_in(state, submission, segment).await {
            Ok(seated) => return Ok(seated),
            // Not this session for this patient: the next one.
            Err(
                SlotError::ScheduleStopped
                | SlotError::AlreadyBooked(_)
                | SlotError::ScheduleAlreadyBooked
                | SlotError::DepartmentDailyLimit
                | SlotError::DailyLimit
                | SlotError::SlotSoldOut,
            ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Seat every matched submission of `doctors` (all doctors: `None`)
/// that a session now has room for; answers how many were seated.
pub async fn seat_waiting(state: &AppState, doctors: Option<&[Uuid]>) -> Result<usize, SlotError> {
    let client = state.pool.get().await?;
    let waiting = match doctors {
        Some(d) => queries::matched_of(&client, d).await?,
        None => queries::all_matched(&client).await?,
    };
    drop(client);
    let mut seated = 0;
    for submission in waiting {
        if seat(state, submission).await?.is_some() {
            seated += 1;
        }
    }
    Ok(seated)
}

async fn seat_in(state: &AppState, submission: Uuid, segment: Uuid) -> Result<Option<BookingRef>, SlotError> {
    let info = segment_info(state, segment).await?;
    let now = state.clock.now();
    let policy = state.policy.get();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(matched) = queries::matched_for_update(&tx, submission).await? else {
        return Ok(None);
    };
    let row = tx
        .query_one_cached(
            "SELECT seg.capacity, sch.status = 'open' FROM segments seg
               JOIN schedules sch ON sch.id = seg.schedule_id WHERE seg.id = $1 FOR UPDATE OF seg",
            &[&segment],
        )
        .await?;
    let (capacity, open): (i32, bool) = (row.get(0), row.get(1));
    if !open {
        return Err(SlotError::ScheduleStopped);
    }
    if capacity >= MAX_SEGMENT_CAPACITY {
        return Err(SlotError::SlotSoldOut);
    }
    let channel: Channel = matched.channel.parse().unwrap_or(Channel::Window);
    let request = BookRequest {
        owner_app: matched.owner_app.clone(),
        ..BookRequest::new(
            SlotRef::new(state.hospital.clone(), segment),
            matched.patient,
            channel,
        )
    };
    pg_lock::check_person_rules(&tx, state, &request, &info).await?;
    let pools: Vec<String> = tx
        .query_cached(
            "SELECT pool FROM bookings WHERE segment_id = $1 AND live",
            &[&segment],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let added = capacity + 1;
    // The seats left per pool once the seat is added; the new booking
    // takes it from the pool with most, so the pools still add up to the
    // seats left and Redis reloads the same counts it had.
    let free = usize::try_from(added).unwrap_or(0).saturating_sub(pools.len());
    let pool = pools_left(&policy, added, free, pools.iter().map(String::as_str))
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or_else(|| "common".to_owned(), |(p, _)| p);
    tx.execute_cached(
        "UPDATE segments SET capacity = $2 WHERE id = $1",
        &[&segment, &added],
    )
    .await?;
    let actor = format!("precise:{submission}");
    let change = CapacityChanged {
        before: capacity,
        after: added,
        actor: &actor,
        purpose: Some("precise"),
    };
    append_capacity_changed(&tx, state, &info, &change).await?;
    let keys = state.keys.segment(&info);
    let mut conn = state.redis.clone();
    // From the schedule's counter, as every hold's visit number is.
    let visit_no: i32 = redis::cmd("INCR")
        .arg(&keys.visit_numbers)
        .query_async(&mut conn)
        .await?;
    let booking_id = Uuid::now_v7();
    let code = crate::booking::service::pickup_code();
    let key = format!("precise-{}", submission.simple());
    let inserted = booking_queries::insert_booking(
        &tx,
        &NewBooking {
            id: booking_id,
            segment_id: segment,
            patient_id: matched.patient,
            channel,
            // Every live seat is within the old capacity: the new one is free.
            seat_no: added,
            pool: &pool,
            visit_no,
            pickup_code: &code,
            idempotency_key: &key,
            referral_id: None,
            owner_app: matched.owner_app.as_deref(),
            hold_deadline: now + policy.hold_length(),
        },
    )
    .await?;
    if inserted.is_none() {
        return Err(SlotError::ScheduleStopped);
    }
    let stored = booking_queries::get_booking(&tx, &state.hospital, booking_id)
        .await?
        .ok_or_else(|| SlotError::BookingNotFound(booking_id.to_string()))?;
    let detail = serde_json::json!({ "precise_submission_id": submission });
    events::append(&tx, EventKind::Offered, &stored.booking, detail.clone()).await?;
    if stored.booking.hold_deadline.is_none() {
        // A free visit is confirmed at once.
        events::append(&tx, EventKind::Confirmed, &stored.booking, detail).await?;
    }
    queries::mark_seated(&tx, submission, booking_id, now).await?;
    seated_event(&tx, state, submission, &matched, &stored.booking, now).await?;
    tx.commit().await?;
    drop(client);
    state.relay.wake();
    after_commit(state, &info, &stored.booking).await?;
    Ok(Some(stored.booking.booking_id))
}

async fn seated_event(
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    state: &AppState,
    submission: Uuid,
    matched: &queries::Matched,
    booking: &crate::booking::Booking,
    now: DateTime<Utc>,
) -> Result<(), SlotError> {
    let doctor: String = tx
        .query_one_cached(
            "SELECT external_id FROM doctors WHERE id = $1",
            &[&matched.doctor],
        )
        .await?
        .get(0);
    jyt_events::append(
        tx,
        "precise.seated",
        &submission.to_string(),
        &serde_json::json!({
            "schema": 1,
            "hospital_id": state.hospital,
            "submission_id": submission,
            "doctor_id": doctor,
            "booking_id": booking.booking_id,
            "schedule_id": booking.schedule_id,
            "owner_app": booking.owner_app,
            "submitted_at": matched.submitted_at,
            "seated_at": now,
            "milliseconds_to_seat": (now - matched.submitted_at).num_milliseconds(),
        }),
    )
    .await?;
    Ok(())
}

/// Redis follows PostgreSQL: the segment reloaded (its new capacity, the
/// seat held by the patient), the patient's day counted for the hold
/// script's person rules, and the hold's deadline for the expiry sweeper.
async fn after_commit(
    state: &AppState,
    info: &SegmentInfo,
    booking: &crate::booking::Booking,
) -> Result<(), SlotError> {
    reload_segment(state, info.segment_id).await?;
    let day = state.keys.patient_day(booking.patient_id, info.visit_date);
    let mut pipe = redis::pipe();
    pipe.hincr(&day, "total", 1)
        .ignore()
        .hincr(&day, format!("dept:{}", info.department), 1)
        .ignore()
        .hincr(&day, format!("sch:{}", info.schedule_id), 1)
        .ignore()
        .expire(&day, patient_day_ttl(info, state.clock.now()))
        .ignore();
    if let Some(deadline) = &booking.hold_deadline {
        pipe.zadd(
            state.keys.holds(),
            booking.booking_id.id.to_string(),
            deadline.timestamp(),
        )
        .ignore();
    }
    let mut conn = state.redis.clone();
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}
