//! Every booking state change is an outbox event with one stable JSON shape:
//! `booking.<kind>` with the booking's fields, plus fields particular to the
//! change under `detail`. Consumers (channel-accounting, card-issuing, the
//! gateway's notifier) rely on these names; add fields, never rename them.

use jyt_db::deadpool_postgres::GenericClient;
use serde_json::json;

use super::Booking;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Held,
    Confirmed,
    Cancelled,
    Expired,
    CheckedIn,
    NoShow,
    Stopped,
    RefundRequested,
    /// A waitlisted patient was handed a freed seat (as a hold).
    Promoted,
    /// A priority hold offered after a stopped clinic.
    Offered,
    /// The visit is over (reported by the hospital).
    Completed,
    /// A lottery entry won this hold in the draw: the winner's app is told
    /// by this event (once), not by `booking.held`, which it does not hear of.
    DrawWon,
}

impl EventKind {
    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::Held => "booking.held",
            EventKind::Confirmed => "booking.confirmed",
            EventKind::Cancelled => "booking.cancelled",
            EventKind::Expired => "booking.expired",
            EventKind::CheckedIn => "booking.checked_in",
            EventKind::NoShow => "booking.no_show",
            EventKind::Stopped => "booking.stopped",
            EventKind::RefundRequested => "booking.refund_requested",
            EventKind::Promoted => "booking.promoted",
            EventKind::Offered => "booking.offered",
            EventKind::Completed => "booking.completed",
            EventKind::DrawWon => "draw.won",
        }
    }
}

/// The payload: the booking as every API shows it, minus the pick-up code
/// (a secret between patient and hospital), plus `detail`.
pub fn payload(booking: &Booking, detail: serde_json::Value) -> serde_json::Value {
    json!({
        "schema": 1,
        "booking_id": booking.booking_id,
        "hospital_id": booking.hospital_id,
        "slot_id": booking.slot_id,
        "schedule_id": booking.schedule_id,
        "patient_id": booking.patient_id,
        "channel": booking.channel,
        "owner_app": booking.owner_app,
        "pool": booking.pool,
        "status": booking.status,
        "fee_fen": booking.fee_fen,
        "payment_method": booking.payment_method,
        "visit_date": booking.visit_date,
        "visit_number": booking.visit_number,
        "segment_starts_at": booking.segment_starts_at,
        // While it binds: the gateway warns the patient's app before it
        // without asking the hospital when.
        "hold_deadline": booking.hold_deadline,
        "department": booking.department,
        "doctor": booking.doctor,
        "detail": detail,
    })
}

pub async fn append<C: GenericClient>(
    client: &C,
    kind: EventKind,
    booking: &Booking,
    detail: serde_json::Value,
) -> Result<uuid::Uuid, jyt_db::tokio_postgres::Error> {
    jyt_events::append(
        client,
        kind.event_type(),
        &booking.booking_id.to_string(),
        &payload(booking, detail),
    )
    .await
}
