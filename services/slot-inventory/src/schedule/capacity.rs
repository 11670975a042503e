//! 加号: raising (or lowering) a time segment's capacity. Seat numbers of
//! existing bookings never change, so a segment cannot shrink below its
//! highest booked seat. New seats go to the schedule's waitlist first: the
//! segment is reloaded from PostgreSQL, and the reload keeps seats back for
//! everyone waiting before anyone else can book them.
//!
//! Every change writes a `segment.capacity_changed` event (before, after,
//! who) in the same transaction: the audit trail's record of the slot.

use jyt_db::Prepared;
use jyt_domain::SlotRef;
use serde::Deserialize;
use uuid::Uuid;

use crate::booking::cache::{reload_segment, segment_info};
use crate::booking::waitlist;
use crate::error::SlotError;
use crate::state::AppState;
use jyt_web::RequestError;

/// Capacity of one segment: at most this many seats.
pub const MAX_SEGMENT_CAPACITY: i32 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityChange {
    pub capacity: i32,
}

/// [`set_segment_capacity_by`] for jyt's own tools and tests, which act as
/// themselves.
pub async fn set_segment_capacity(
    state: &AppState,
    segment: Uuid,
    change: &CapacityChange,
) -> Result<usize, SlotError> {
    set_segment_capacity_by(state, segment, change, "local").await
}

/// Set a segment's capacity on behalf of `actor`; answers how many
/// patients the new seats went to from the waitlist.
pub async fn set_segment_capacity_by(
    state: &AppState,
    segment: Uuid,
    change: &CapacityChange,
    actor: &str,
) -> Result<usize, SlotError> {
    if !(0..=MAX_SEGMENT_CAPACITY).contains(&change.capacity) {
        return Err(RequestError::invalid(
            "capacity",
            format!("must be between 0 and {MAX_SEGMENT_CAPACITY}"),
        )
        .into());
    }
    let info = segment_info(state, segment).await?;
    // A booking's write takes no lock on its segment (V20), and this
    // transaction's snapshot would not show one in flight anyway: Redis
    // names every holder from the moment of the hold, so a seat above the
    // new capacity that is held is refused here, and the free seats above
    // it are withdrawn so that none is taken before the commit.
    let keys = state.keys.segment(&info);
    if let Some(seat) = state
        .scripts
        .withdraw_above(&state.redis, &keys, change.capacity)
        .await?
    {
        return Err(seat_booked(seat));
    }
    let written = write_capacity(state, &info, change, actor).await;
    if let Err(refused) = written {
        // The seats withdrawn above go back: Redis is loaded again from
        // PostgreSQL, where the capacity did not change. The answer is why
        // the change was refused, whatever the reload says.
        if let Err(e) = reload_segment(state, segment).await {
            tracing::error!(error = %e, %segment, "could not reload a segment after a refused capacity change");
        }
        return Err(refused);
    }
    state.relay.wake();
    // Holds taken between the commit and the reload that PostgreSQL does not
    // know yet are caught by its unique seat index and retried.
    reload_segment(state, segment).await?;
    waitlist::promote(state, info.schedule_id).await
}

fn seat_booked(seat: i32) -> SlotError {
    RequestError::invalid(
        "capacity",
        format!("seat {seat} is booked; the capacity cannot go below it"),
    )
    .into()
}

/// The capacity in PostgreSQL, with its `segment.capacity_changed` event,
/// in one transaction; refused below the highest booked seat.
async fn write_capacity(
    state: &AppState,
    info: &crate::booking::queries::SegmentInfo,
    change: &CapacityChange,
    actor: &str,
) -> Result<(), SlotError> {
    let segment = info.segment_id;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt_cached(
            "SELECT (SELECT coalesce(max(seat_no), 0) FROM bookings
                      WHERE segment_id = $1 AND live),
                    capacity
               FROM segments WHERE id = $1 FOR UPDATE",
            &[&segment],
        )
        .await?
        .ok_or_else(|| SlotError::SlotNotFound(segment.to_string()))?;
    let highest_seat: i32 = row.get(0);
    let before: i32 = row.get(1);
    if change.capacity < highest_seat {
        return Err(seat_booked(highest_seat));
    }
    tx.execute_cached(
        "UPDATE segments SET capacity = $2 WHERE id = $1",
        &[&segment, &change.capacity],
    )
    .await?;
    let change_event = CapacityChanged {
        before,
        after: change.capacity,
        actor,
        purpose: None,
    };
    append_capacity_changed(&tx, state, info, &change_event).await?;
    tx.commit().await?;
    Ok(())
}

/// One `segment.capacity_changed` event: who changed the segment from
/// what to what, and (for a seat that is one patient's, `precise`) why.
pub(crate) struct CapacityChanged<'a> {
    pub before: i32,
    pub after: i32,
    pub actor: &'a str,
    /// `Some("precise")`: a 精准预约 seat, not an answer to the waitlist's
    /// 加号 request (channel-accounting leaves the request open).
    pub purpose: Option<&'a str>,
}

pub(crate) async fn append_capacity_changed<C: jyt_db::deadpool_postgres::GenericClient>(
    client: &C,
    state: &AppState,
    info: &crate::booking::queries::SegmentInfo,
    change: &CapacityChanged<'_>,
) -> Result<(), SlotError> {
    let slot = SlotRef::new(state.hospital.clone(), info.segment_id);
    let mut payload = serde_json::json!({
        "schema": 1,
        "hospital_id": state.hospital,
        "schedule_id": info.schedule_id,
        "segment_id": info.segment_id,
        "slot_id": slot,
        "visit_date": info.visit_date,
        "starts_at": info.starts_at,
        "capacity_before": change.before,
        "capacity": change.after,
        "actor": change.actor,
    });
    if let Some(purpose) = change.purpose {
        payload["purpose"] = purpose.into();
    }
    jyt_events::append(client, "segment.capacity_changed", &slot.to_string(), &payload).await?;
    Ok(())
}
