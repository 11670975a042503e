//! Visit progress reported by the hospital's HIS: arrival (the hospital's
//! own check-in, no pick-up code) and completion.

use jyt_db::Prepared;
use jyt_domain::{BookingRef, BookingStatus};

use crate::booking::events::{self, EventKind};
use crate::booking::lifecycle::locked;
use crate::booking::queries::{self, StoredBooking};
use crate::error::SlotError;
use crate::state::AppState;

/// The patient arrived (registered at the hospital's desk): checked in with
/// the next queue number. Arriving twice answers the same booking. An
/// arrival the hospital records after the booking was marked a no-show is
/// still taken (`late: true` on the event): the patient came, the hospital
/// was late to say so, and the patient's appeal is granted from this.
pub async fn arrive(state: &AppState, booking: &BookingRef) -> Result<StoredBooking, SlotError> {
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let current = locked(&tx, state, booking).await?;
    let late = match current.booking.status {
        BookingStatus::CheckedIn | BookingStatus::Completed => return Ok(current),
        BookingStatus::Confirmed => false,
        BookingStatus::NoShow => true,
        other => return Err(SlotError::NotCheckInable(other)),
    };
    let (hospital, schedule) = (&state.hospital, current.booking.schedule_id);
    let stored = if late {
        queries::late_check_in(&tx, hospital, booking.id, schedule, now).await?
    } else {
        queries::check_in(&tx, hospital, booking.id, schedule, now).await?
    }
    .ok_or_else(|| SlotError::BookingNotFound(booking.to_string()))?;
    events::append(
        &tx,
        EventKind::CheckedIn,
        &stored.booking,
        serde_json::json!({ "by": "hospital", "late": late }),
    )
    .await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(stored)
}

/// The visit is over. Completing twice answers the same booking.
pub async fn complete(state: &AppState, booking: &BookingRef) -> Result<StoredBooking, SlotError> {
    let now = state.clock.now();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let current = locked(&tx, state, booking).await?;
    match current.booking.status {
        BookingStatus::Completed => return Ok(current),
        BookingStatus::CheckedIn => {}
        other => return Err(SlotError::NotCompletable(other)),
    }
    tx.execute_cached(
        "UPDATE bookings SET status = 'completed', completed_at = $2, updated_at = $2 WHERE id = $1",
        &[&booking.id, &now],
    )
    .await?;
    let stored = queries::get_booking(&tx, &state.hospital, booking.id)
        .await?
        .ok_or_else(|| SlotError::BookingNotFound(booking.to_string()))?;
    // The survey's figures are per department and doctor, by the
    // hospital's own ids (names can repeat or change); and the completion
    // instant is the hospital's clock, from which the survey's expiry runs.
    let detail = serde_json::json!({
        "completed_at": now,
        "department_id": stored.department_id,
        "doctor_id": stored.doctor_id,
    });
    events::append(&tx, EventKind::Completed, &stored.booking, detail).await?;
    tx.commit().await?;
    state.relay.wake();
    Ok(stored)
}
