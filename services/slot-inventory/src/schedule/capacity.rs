//! 加号: raising (or lowering) a time segment's capacity. Seat numbers of
//! existing bookings never change, so a segment cannot shrink below its
//! highest booked seat. New seats go to the schedule's waitlist first: the
//! segment is reloaded from PostgreSQL, and the reload keeps seats back for
//! everyone waiting before anyone else can book them.

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

/// Set a segment's capacity; answers how many patients the new seats went
/// to from the waitlist.
pub async fn set_segment_capacity(
    state: &AppState,
    segment: Uuid,
    change: &CapacityChange,
) -> Result<usize, SlotError> {
    if !(0..=MAX_SEGMENT_CAPACITY).contains(&change.capacity) {
        return Err(RequestError::invalid(
            "capacity",
            format!("must be between 0 and {MAX_SEGMENT_CAPACITY}"),
        )
        .into());
    }
    let info = segment_info(state, segment).await?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT (SELECT coalesce(max(seat_no), 0) FROM bookings
                      WHERE segment_id = $1 AND status NOT IN ('cancelled', 'expired', 'stopped'))
               FROM segments WHERE id = $1 FOR UPDATE",
            &[&segment],
        )
        .await?
        .ok_or_else(|| SlotError::SlotNotFound(segment.to_string()))?;
    let highest_seat: i32 = row.get(0);
    if change.capacity < highest_seat {
        return Err(RequestError::invalid(
            "capacity",
            format!("seat {highest_seat} is booked; the capacity cannot go below it"),
        )
        .into());
    }
    tx.execute(
        "UPDATE segments SET capacity = $2 WHERE id = $1",
        &[&segment, &change.capacity],
    )
    .await?;
    tx.commit().await?;
    drop(client);
    // Holds taken between the commit and the reload that PostgreSQL does not
    // know yet are caught by its unique seat index and retried.
    reload_segment(state, segment).await?;
    waitlist::promote(state, info.schedule_id).await
}
