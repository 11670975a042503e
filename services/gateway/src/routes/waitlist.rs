//! A patient's place in a waitlist (候补), read through their channel: the
//! position in line, the status, and once promoted the booking the line
//! handed them. Entry ids are `<hospital>-<uuid>`, like booking ids, as
//! the join answers them (`POST /v1/hospitals/{id}/schedules/{id}/waitlist`).
//! Only the channel app that joined (the entry's `owner_app`) reads an
//! entry by its id alone; another app needs the patient's own card.

use actix_web::{HttpRequest, HttpResponse, get, web};
use jyt_domain::{BookingRef, HospitalId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::booking::read_referenced_as_owner;
use crate::error::GatewayError;
use crate::state::{Caller, GatewayState};
use crate::upstream::Forwarded;

/// A place in a waitlist, as channels see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WaitlistEntryView {
    /// `<hospital>-<uuid>`: what `GET /v1/waitlist/{entry_id}` takes.
    pub entry_id: String,
    pub hospital_id: String,
    pub schedule_id: Uuid,
    pub patient_id: Uuid,
    pub channel: String,
    /// The channel app that joined for the patient (`null`: none); the
    /// booking a promotion makes belongs to it too.
    #[serde(default)]
    pub owner_app: Option<String>,
    /// `waiting`, `promoted` (a hold or booking was handed over: see
    /// `booking_id`) or `left` (the patient could no longer hold a seat of
    /// this schedule, or the clinic was stopped).
    pub status: String,
    /// 1 for the head of the line; `null` once no longer waiting.
    pub position: Option<i64>,
    /// `<hospital>-<uuid>` of the booking, once promoted.
    pub booking_id: Option<String>,
    /// RFC 3339, Asia/Shanghai.
    pub created_at: String,
}

/// What the hospital answers for an entry (its id is its own uuid).
#[derive(Deserialize)]
struct HospitalEntry {
    entry_id: Uuid,
    schedule_id: Uuid,
    patient_id: Uuid,
    channel: String,
    #[serde(default)]
    owner_app: Option<String>,
    status: String,
    position: Option<i64>,
    booking_id: Option<String>,
    created_at: String,
}

fn view(hospital: &HospitalId, body: &[u8]) -> Result<WaitlistEntryView, GatewayError> {
    let e: HospitalEntry = serde_json::from_slice(body).map_err(|e| {
        GatewayError::Unexpected(anyhow::Error::new(e).context("the hospital's waitlist entry"))
    })?;
    Ok(WaitlistEntryView {
        entry_id: BookingRef::new(hospital.clone(), e.entry_id).to_string(),
        hospital_id: hospital.to_string(),
        schedule_id: e.schedule_id,
        patient_id: e.patient_id,
        channel: e.channel,
        owner_app: e.owner_app,
        status: e.status,
        position: e.position,
        booking_id: e.booking_id,
        created_at: e.created_at,
    })
}

/// A hospital's answer to a join, with the entry as channels see it (its
/// status kept: 201 a new place, 200 the same place again); refusals pass
/// through unchanged.
pub fn joined(hospital: &HospitalId, answer: Forwarded) -> Result<HttpResponse, GatewayError> {
    if !answer.status.is_success() {
        return Ok(answer.into_response());
    }
    Ok(HttpResponse::build(answer.status).json(view(hospital, &answer.body)?))
}

#[utoipa::path(
    get,
    path = "/v1/waitlist/{entry_id}",
    tag = "bookings",
    params(
        ("entry_id" = String, Path, description = "`<hospital>-<uuid>`, as the join answered it"),
        ("X-Patient-Card" = Option<String>, Header, description = "From an app other than the one that joined: the patient's platform card number, as their consent. A header, so it stays out of access logs"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "Or the patient's e-card QR token (at most one of the two)"),
    ),
    responses(
        (status = 200, description = "The place in line: `position` while waiting, `booking_id` once promoted", body = WaitlistEntryView),
        (status = 400, description = "INVALID_FIELD (entry_id, or naming the header of a malformed card), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_BOOKING: another app's entry (or no such entry: a refusal never tells which) without the patient's own card; CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, CACHE_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/waitlist/{entry_id}")]
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<GatewayState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let (entry, answer) = read_referenced_as_owner(
        &state,
        &caller,
        &req,
        &path,
        "entry_id",
        |e| format!("/v1/waitlist/{}", e.id),
        "a waitlist entry",
    )
    .await?;
    Ok(HttpResponse::Ok().json(view(&entry.hospital, &answer.body)?))
}
