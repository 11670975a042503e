//! `$find`, `$hold` and `$book`. `$hold` and `$book` run exactly the paths
//! of `POST /v1/bookings` and `POST /v1/bookings/{id}/confirm`
//! ([`service::book`], [`lifecycle::confirm`]); only the shapes differ.

use chrono::TimeDelta;
use jyt_domain::{BookingRef, Channel, IdempotencyKey, SlotRef};
use jyt_web::RequestError;
use uuid::Uuid;

use super::outcome::FhirError;
use super::params::{self, Param};
use super::queries::{self, SlotFilter, SlotRow};
use crate::booking::BookRequest;
use crate::booking::lifecycle::{self, ConfirmRequest, PaymentMethod};
use crate::booking::queries::StoredBooking;
use crate::booking::service::{self, BookOutcome};
use crate::error::SlotError;
use crate::state::AppState;

/// At most this many proposals per `$find`, and this long a window.
pub const MAX_PROPOSALS: i64 = 500;
pub const MAX_FIND_DAYS: i64 = 92;

/// The service names fields as `/v1` does; a FHIR client sent parameters.
fn as_parameter(e: SlotError, field: &str, param: &str) -> FhirError {
    match e {
        SlotError::Request(RequestError::InvalidField { field: f, reason }) if f == field => {
            FhirError::invalid(param, reason)
        }
        other => FhirError(other),
    }
}

fn required<'a>(params: &'a [Param], name: &str) -> Result<&'a Param, FhirError> {
    params::find(params, name).ok_or_else(|| FhirError::invalid(name, "is required"))
}

/// `$find`: free slots starting in `[start, end)`, of a department and/or
/// practitioner; with the total number that matched.
pub async fn find(state: &AppState, body: &[u8]) -> Result<(i64, Vec<SlotRow>), FhirError> {
    let params = params::parameters(body, &["start", "end", "specialty", "practitioner"])?;
    let (from, _) = required(&params, "start")?.time()?;
    // An end given as a date includes that day.
    let (_, until) = required(&params, "end")?.time()?;
    if until <= from {
        return Err(FhirError::invalid("end", "must be after start"));
    }
    if until - from > TimeDelta::days(MAX_FIND_DAYS) {
        return Err(FhirError::invalid(
            "end",
            format!("the window may be at most {MAX_FIND_DAYS} days"),
        ));
    }
    let departments = params::find(&params, "specialty")
        .map(Param::department)
        .transpose()?
        .map(|d| vec![d]);
    let doctors = match params::find(&params, "practitioner") {
        None => None,
        Some(p) => {
            let id = p.reference("Practitioner", true)?;
            Some(
                params::scoped_id("practitioner", &id, &state.hospital)?
                    .into_iter()
                    .collect(),
            )
        }
    };
    let filter = SlotFilter {
        statuses: Some(vec!["free".to_owned()]),
        from: Some(from),
        until: Some(until),
        departments,
        doctors,
        ..Default::default()
    };
    let now = state.clock.now();
    let client = state.pool.get().await?;
    let total = queries::count_slots(&client, &filter, now).await?;
    let rows = queries::slots(&client, &filter, now, Some(MAX_PROPOSALS), 0).await?;
    Ok((total, rows))
}

/// `$hold`: the booking path of `POST /v1/bookings`, on its own task (a
/// client hanging up must not cancel it between the Redis hold and the
/// PostgreSQL write).
pub async fn hold(
    state: &AppState,
    key: IdempotencyKey,
    channel: Channel,
    (owner_app, signed_doctors): (Option<String>, Vec<String>),
    body: &[u8],
) -> Result<BookOutcome, FhirError> {
    let params = params::parameters(body, &["slot", "patient", "referral"])?;
    let slot_id: SlotRef = required(&params, "slot")?
        .reference("Slot", false)?
        .parse()
        .map_err(|_| FhirError::invalid("slot", "must reference Slot/<hospital>-<uuid>"))?;
    let patient_id = Uuid::parse_str(&required(&params, "patient")?.reference("Patient", false)?)
        .map_err(|_| FhirError::invalid("patient", "must reference Patient/<person uuid>"))?;
    let referral_id = params::find(&params, "referral")
        .map(|p| p.text(64))
        .transpose()?;
    let req = BookRequest {
        referral_id,
        signed_doctors,
        owner_app,
        ..BookRequest::new(slot_id, patient_id, channel)
    };
    let state = state.clone();
    let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
        service::book(state, req, key).await
    }));
    task.await
        .map_err(|e| SlotError::Unexpected(anyhow::anyhow!("booking task failed: {e}")))?
        .map_err(|e| as_parameter(e, "referral_id", "referral"))
}

/// `$book`: pays a held booking through the confirm path of
/// `POST /v1/bookings/{id}/confirm`.
pub async fn book(state: &AppState, body: &[u8]) -> Result<StoredBooking, FhirError> {
    let params = params::parameters(body, &["appointment", "paymentReference", "paymentMethod"])?;
    let booking: BookingRef = required(&params, "appointment")?
        .reference("Appointment", false)?
        .parse()
        .map_err(|_| FhirError::invalid("appointment", "must reference Appointment/<hospital>-<uuid>"))?;
    let payment_reference = required(&params, "paymentReference")?.text(64)?;
    let payment_method = match required(&params, "paymentMethod")?.text(32)?.as_str() {
        "self_pay" => PaymentMethod::SelfPay,
        "insurance" => PaymentMethod::Insurance,
        "prepaid_card" => PaymentMethod::PrepaidCard,
        _ => {
            return Err(FhirError::invalid(
                "paymentMethod",
                "must be self_pay, insurance or prepaid_card",
            ));
        }
    };
    let req = ConfirmRequest {
        payment_reference,
        payment_method,
        amount_fen: None,
    };
    lifecycle::confirm(state, &booking, &req)
        .await
        .map_err(|e| as_parameter(e, "payment_reference", "paymentReference"))
}
