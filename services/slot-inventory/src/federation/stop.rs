//! 停诊: the hospital stops a clinic. Every live booking of the schedule
//! becomes `stopped` (a refund is requested for each paid one, and every
//! patient is notified by the event), the waitlist is closed, the seats
//! leave sale, and then each affected patient, in the order of their
//! original booking and then the waitlist's, is offered a priority hold on
//! an equivalent slot: same department and clinic level, the same or one
//! of the next few days. Stopping twice changes nothing more.

use chrono::Days;
use jyt_db::Prepared;
use jyt_domain::{BookingRef, Channel, IdempotencyKey, SlotRef};
use jyt_web::RequestError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::booking::cache::{reload_segment, segment_info};
use crate::booking::events::{self, EventKind};
use crate::booking::hold::{HeldSeat, SeatGoes};
use crate::booking::queries::{self, StoredBooking};
use crate::booking::service;
use crate::booking::{BookRequest, OfferOf};
use crate::error::SlotError;
use crate::state::AppState;

/// How many days after the stopped clinic an equivalent one is looked for.
const OFFER_DAYS: u64 = 3;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    pub reason: String,
}

/// A priority hold offered to one affected patient.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    pub patient_id: Uuid,
    /// The stopped booking, or `null` for a patient from the waitlist.
    pub replaces: Option<BookingRef>,
    /// The held (or, for a free exam, confirmed) booking offered; `null`
    /// when no equivalent slot was free or the patient's own limits forbid.
    pub offered: Option<BookingRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopOutcome {
    pub schedule_id: Uuid,
    /// True when the clinic was already stopped: nothing was done again.
    pub already_stopped: bool,
    pub stopped_bookings: usize,
    pub refunds_requested: usize,
    pub offers: Vec<Offer>,
}

/// [`stop_by`] for jyt's own tools and tests, which act as themselves.
pub async fn stop(state: &AppState, schedule: Uuid, req: &StopRequest) -> Result<StopOutcome, SlotError> {
    stop_by(state, schedule, req, "local").await
}

/// 停诊 on behalf of `actor`, who is named in the `schedule.stopped` event
/// (the audit trail's record of the stop).
pub async fn stop_by(
    state: &AppState,
    schedule: Uuid,
    req: &StopRequest,
    actor: &str,
) -> Result<StopOutcome, SlotError> {
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(RequestError::invalid("reason", "must be 1 to 200 characters").into());
    }
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt_cached(
            "SELECT status FROM schedules WHERE id = $1 FOR UPDATE",
            &[&schedule],
        )
        .await?
    else {
        return Err(SlotError::ScheduleNotFound(schedule.to_string()));
    };
    if row.get::<_, String>(0) == "stopped" {
        return Ok(StopOutcome {
            schedule_id: schedule,
            already_stopped: true,
            stopped_bookings: 0,
            refunds_requested: 0,
            offers: Vec::new(),
        });
    }
    tx.execute_cached(
        "UPDATE schedules SET status = 'stopped', stop_reason = $2, stopped_at = $3 WHERE id = $1",
        &[&schedule, &reason, &now],
    )
    .await?;
    let (stopped, refunds) = stop_bookings(&tx, state, schedule, reason, now).await?;
    let waiting = leave_waitlist(&tx, state, schedule, reason).await?;
    // Every slot of the schedule, so each slot's provenance shows the stop.
    let slot_ids: Vec<String> = crate::booking::waitlist_queries::segment_ids(&tx, schedule)
        .await?
        .into_iter()
        .map(|segment| SlotRef::new(state.hospital.clone(), segment).to_string())
        .collect();
    jyt_events::append(
        &tx,
        "schedule.stopped",
        &schedule.to_string(),
        &serde_json::json!({
            "schema": 1,
            "hospital_id": state.hospital,
            "schedule_id": schedule,
            "reason": reason,
            "stopped_bookings": stopped.len(),
            "slot_ids": slot_ids,
            "actor": actor,
        }),
    )
    .await?;
    tx.commit().await?;
    drop(client);
    state.relay.wake();

    take_off_sale(state, schedule, &stopped).await?;

    let offers = make_offers(state, schedule, &stopped, &waiting).await?;
    Ok(StopOutcome {
        schedule_id: schedule,
        already_stopped: false,
        stopped_bookings: stopped.len(),
        refunds_requested: refunds,
        offers,
    })
}

/// Stop the schedule's live bookings, each with its event and, when paid,
/// a refund request; answers them and how many refunds were requested.
async fn stop_bookings(
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    state: &AppState,
    schedule: Uuid,
    reason: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Vec<StoredBooking>, usize), SlotError> {
    let ids: Vec<Uuid> = tx
        .query_cached(
            "SELECT id FROM bookings WHERE schedule_id = $1 AND status IN ('held', 'confirmed')
              ORDER BY visit_no, created_at",
            &[&schedule],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut stopped: Vec<StoredBooking> = Vec::with_capacity(ids.len());
    let mut refunds = 0;
    for id in ids {
        let Some(before) = queries::get_booking(tx, &state.hospital, id).await? else {
            continue;
        };
        let Some(after) =
            queries::transition(tx, &state.hospital, id, &["held", "confirmed"], "stopped", now).await?
        else {
            continue;
        };
        events::append(
            tx,
            EventKind::Stopped,
            &after.booking,
            serde_json::json!({ "reason": reason }),
        )
        .await?;
        if let Some(reference) = &before.payment_reference {
            events::append(
                tx,
                EventKind::RefundRequested,
                &after.booking,
                serde_json::json!({
                    "payment_reference": reference,
                    "amount_fen": after.booking.fee_fen,
                    "reason": "stopped",
                }),
            )
            .await?;
            refunds += 1;
        }
        stopped.push(after);
    }
    Ok((stopped, refunds))
}

/// Take everyone off the stopped schedule's waitlist (first come first),
/// each with a `waitlist.stopped` event.
async fn leave_waitlist(
    tx: &jyt_db::deadpool_postgres::Transaction<'_>,
    state: &AppState,
    schedule: Uuid,
    reason: &str,
) -> Result<Vec<Waiting>, SlotError> {
    let mut waiting: Vec<Waiting> = tx
        .query_cached(
            "UPDATE waitlist_entries SET status = 'left'
              WHERE schedule_id = $1 AND status = 'waiting'
             RETURNING created_at, id, patient_id, channel, owner_app",
            &[&schedule],
        )
        .await?
        .iter()
        .map(|r| Waiting {
            created_at: r.get(0),
            entry: r.get(1),
            patient: r.get(2),
            channel: r.get(3),
            owner_app: r.get(4),
        })
        .collect();
    // First come, first offered.
    waiting.sort_by_key(|w| (w.created_at, w.entry));
    for Waiting {
        entry,
        patient,
        channel,
        owner_app,
        ..
    } in &waiting
    {
        jyt_events::append(
            tx,
            "waitlist.stopped",
            &entry.to_string(),
            &serde_json::json!({
                "schema": 1,
                "entry_id": entry,
                "hospital_id": state.hospital,
                "schedule_id": schedule,
                "patient_id": patient,
                "channel": channel,
                "owner_app": owner_app,
                "reason": reason,
            }),
        )
        .await?;
    }
    Ok(waiting)
}

/// A priority hold for each stopped booking's patient, then for each
/// patient who was waiting, in that order.
async fn make_offers(
    state: &AppState,
    schedule: Uuid,
    stopped: &[StoredBooking],
    waiting: &[Waiting],
) -> Result<Vec<Offer>, SlotError> {
    let mut offers = Vec::new();
    for b in stopped {
        // The offer belongs to the app that made the stopped booking.
        let offered = offer(
            state,
            schedule,
            Offeree {
                patient: b.booking.patient_id,
                channel: b.booking.channel,
                owner_app: b.booking.owner_app.clone(),
                // A referred patient's offer uses their referral again
                // (the stopped booking freed it).
                referral_id: b.booking.referral_id.clone(),
            },
            Some(b.booking.booking_id.id),
            b.booking.booking_id.id,
        )
        .await?;
        offers.push(Offer {
            patient_id: b.booking.patient_id,
            replaces: Some(b.booking.booking_id.clone()),
            offered,
        });
    }
    for Waiting {
        entry,
        patient,
        channel,
        owner_app,
        ..
    } in waiting
    {
        let offeree = Offeree {
            patient: *patient,
            channel: channel.parse().unwrap_or(Channel::Window),
            owner_app: owner_app.clone(),
            referral_id: None,
        };
        let offered = offer(state, schedule, offeree, None, *entry).await?;
        offers.push(Offer {
            patient_id: *patient,
            replaces: None,
            offered,
        });
    }
    Ok(offers)
}

/// Free the stopped bookings' holds in Redis (their patients' day counts
/// with them) and reload the segments closed.
async fn take_off_sale(state: &AppState, schedule: Uuid, stopped: &[StoredBooking]) -> Result<(), SlotError> {
    for b in stopped {
        let info = segment_info(state, b.segment_id).await?;
        let keys = state.keys.segment(&info);
        state
            .scripts
            .release(
                &state.redis,
                &keys,
                &state.keys.patient_day(b.booking.patient_id, info.visit_date),
                &state.keys.no_idempotency(),
                &crate::booking::referral::key_of(state, b.booking.referral_id.as_deref()),
                &HeldSeat {
                    patient: b.booking.patient_id,
                    booking_id: b.booking.booking_id.id,
                },
                SeatGoes::Nowhere,
            )
            .await?;
    }
    let client = state.pool.get().await?;
    let segments = crate::booking::waitlist::queries::segment_ids(&client, schedule).await?;
    drop(client);
    for segment in segments {
        reload_segment(state, segment).await?;
    }
    Ok(())
}

/// A patient of the stopped clinic's waitlist: offered a seat too.
struct Waiting {
    created_at: chrono::DateTime<chrono::Utc>,
    entry: Uuid,
    patient: Uuid,
    channel: String,
    /// The app that made the entry: the offer is its.
    owner_app: Option<String>,
}

/// Whom an offer is for: the patient, their channel, and their channel
/// app, which the offered booking belongs to.
struct Offeree {
    patient: Uuid,
    channel: Channel,
    owner_app: Option<String>,
    referral_id: Option<String>,
}

/// Hold the first free equivalent seat for the patient, ahead of everyone
/// else (like a waitlist promotion: any pool). Keyed by what it replaces,
/// so a retried stop never offers twice.
async fn offer(
    state: &AppState,
    stopped: Uuid,
    offeree: Offeree,
    replaces: Option<Uuid>,
    key: Uuid,
) -> Result<Option<BookingRef>, SlotError> {
    let Offeree {
        patient,
        channel,
        owner_app,
        referral_id,
    } = offeree;
    let client = state.pool.get().await?;
    let Some(row) = client
        .query_opt_cached(
            "SELECT department_id, clinic_level, visit_date FROM schedules WHERE id = $1",
            &[&stopped],
        )
        .await?
    else {
        return Ok(None);
    };
    let (department, level, date): (Uuid, String, chrono::NaiveDate) = (row.get(0), row.get(1), row.get(2));
    let last = date.checked_add_days(Days::new(OFFER_DAYS)).unwrap_or(date);
    let segments: Vec<Uuid> = client
        .query_cached(
            "SELECT seg.id FROM segments seg JOIN schedules sch ON sch.id = seg.schedule_id
              WHERE sch.department_id = $1 AND sch.clinic_level = $2 AND sch.status = 'open'
                AND sch.visit_date BETWEEN $3 AND $4 AND sch.id <> $5 AND seg.starts_at > $6
              ORDER BY sch.visit_date, seg.starts_at",
            &[&department, &level, &date, &last, &stopped, &state.clock.now()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let idempotency: IdempotencyKey = format!("stop-offer-{}", key.simple())
        .parse()
        .map_err(|e| SlotError::Unexpected(anyhow::anyhow!("offer idempotency key: {e}")))?;
    for segment in segments {
        let req = BookRequest {
            referral_id: referral_id.clone(),
            owner_app: owner_app.clone(),
            offer: Some(OfferOf { replaces }),
            ..BookRequest::new(SlotRef::new(state.hospital.clone(), segment), patient, channel)
        };
        match service::book(state.clone(), req, idempotency.clone()).await {
            Ok(o) => return Ok(Some(o.booking.booking_id)),
            Err(
                SlotError::SlotSoldOut
                | SlotError::NotYetReleased(_)
                | SlotError::ScheduleStopped
                | SlotError::AlreadyBooked(_)
                | SlotError::ScheduleAlreadyBooked,
            ) => {}
            // The patient's own limits forbid another booking that day,
            // or their referral no longer entitles them (expired).
            Err(SlotError::DepartmentDailyLimit | SlotError::DailyLimit | SlotError::Referral(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
