//! A patient's own view of this hospital, for the gateway: their bookings
//! and waitlist places, and what the hospital did about a visit they are
//! recorded as having missed.

use actix_web::{HttpResponse, get, web};
use jyt_domain::BookingStatus;
use jyt_web::{Query, RequestError};
use serde::Deserialize;
use uuid::Uuid;

use super::booking_ref;
use crate::booking::{queries, waitlist};
use crate::error::SlotError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
}

/// The patient's bookings (latest visit first) and waitlist places
/// (newest first), at most `limit` (default 100) of each.
#[get("/v1/patients/{patient_id}/bookings")]
pub async fn bookings(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: Query<ListQuery>,
) -> Result<HttpResponse, SlotError> {
    let patient =
        Uuid::parse_str(&path).map_err(|_| RequestError::invalid("patient_id", "must be a UUID"))?;
    let limit = query.0.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(RequestError::invalid("limit", "must be 1 to 500").into());
    }
    let client = state.pool.get().await?;
    let bookings: Vec<_> = queries::patient_bookings(&client, &state.hospital, patient, limit)
        .await?
        .into_iter()
        .map(|s| s.booking)
        .collect();
    drop(client);
    let waitlist = waitlist::of_patient(&state, patient, limit).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "hospital_id": state.hospital,
        "bookings": bookings,
        "waitlist": waitlist,
    })))
}

/// Whether the hospital caused a no-show: `clinic_stopped` (its schedule
/// was stopped, 停诊, even after the visit), `late_check_in` (the hospital
/// recorded the arrival after the no-show cutoff), or `null`.
///
/// `GET /v1/bookings/{booking_id}/no-show-cause`.
#[get("/no-show-cause")]
pub async fn no_show_cause(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, SlotError> {
    let raw = path.into_inner();
    let booking = booking_ref(&raw)?;
    if booking.hospital != state.hospital {
        return Err(SlotError::BookingNotFound(raw));
    }
    let client = state.pool.get().await?;
    let Some((status, schedule_status, checked_in_at, ends_at)) =
        queries::booking_outcome(&client, booking.id).await?
    else {
        return Err(SlotError::BookingNotFound(raw));
    };
    let grace = chrono::TimeDelta::minutes(i64::from(state.policy.get().no_show_grace_minutes));
    let arrived = [
        BookingStatus::CheckedIn.as_str(),
        BookingStatus::Completed.as_str(),
    ]
    .contains(&status.as_str());
    let cause = if schedule_status == "stopped" {
        Some("clinic_stopped")
    } else if arrived && checked_in_at.is_some_and(|at| at > ends_at + grace) {
        Some("late_check_in")
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "booking_id": booking,
        "status": status,
        "cause": cause,
    })))
}
