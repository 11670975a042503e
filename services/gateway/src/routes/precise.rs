//! 精准预约 (precise appointment), the patient's side: read an expert's
//! patient profile, submit a history when the expert's clinic is sold out
//! for the channel, and follow the submission. The hospital's side (publish
//! the profile, list and decide submissions) is in [`super::federation`].
//!
//! Submission ids are `<hospital>-<uuid>`, like booking ids. Only the
//! channel app that submitted (the submission's `owner_app`) reads one by
//! its id alone; another app needs the patient's own card. A match's 加号
//! seat is a hold of that app's, announced as `booking.offered` and paid
//! like any hold (`POST /v1/bookings/{id}/payments`).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::NaiveDate;
use jyt_domain::{BookingRef, HospitalId};
use jyt_web::{Json, RequestError};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::state::{Caller, GatewayState};
use crate::upstream::Forwarded;

/// A hospital's own doctor id as a path segment: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn doctor_id(raw: &str) -> Result<&str, GatewayError> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && raw != "."
        && raw != "..";
    if ok {
        Ok(raw)
    } else {
        Err(RequestError::invalid(
            "doctor_id",
            "must be the hospital's doctor id: 1 to 64 of A-Z a-z 0-9 - _ .",
        )
        .into())
    }
}

fn hospital_of(raw: &str) -> Result<HospitalId, GatewayError> {
    raw.parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("hospital_id", e.to_string()).into())
}

#[utoipa::path(
    get,
    path = "/v1/hospitals/{hospital_id}/doctors/{doctor_id}/precise-profile",
    tag = "precise",
    params(
        ("hospital_id" = String, Path, description = "e.g. `pumch`"),
        ("doctor_id" = String, Path, description = "The hospital's doctor id, as `/v1/hospitals/{id}/schedules` lists it"),
    ),
    responses(
        (status = 200, description = "The expert's patient profile: wanted conditions (ICD-10 codes or prefixes), findings, age range, required document kinds, the matching rule", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, DOCTOR_NOT_FOUND, PRECISE_PROFILE_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/hospitals/{hospital_id}/doctors/{doctor_id}/precise-profile")]
pub async fn profile(
    state: web::Data<GatewayState>,
    _caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = hospital_of(&path.0)?;
    let doctor = doctor_id(&path.1)?;
    state.upstreams.route(&hospital)?;
    let answer = state
        .upstreams
        .forward(
            &hospital,
            reqwest::Method::GET,
            &format!("/v1/doctors/{doctor}/precise-profile"),
            HeaderMap::new(),
            None,
        )
        .await?;
    Ok(answer.into_response())
}

/// A document the patient's app holds, by reference only.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentRef {
    /// A document kind key, e.g. `ct_report`.
    pub kind: String,
    /// The app's own id of the document: never its contents.
    pub id: String,
}

/// The acting patient (card or e-card, optionally a bound family member)
/// and their history. No ID number or phone: the card names the patient.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmissionRequest {
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub ecard_token: Option<String>,
    /// A bound family member to submit for.
    #[serde(default)]
    pub patient_id: Option<Uuid>,
    /// ICD-10 codes, e.g. `C34.1`.
    pub diagnosis_codes: Vec<String>,
    /// Finding keys, e.g. `ct_nodule_over_8mm`.
    #[serde(default)]
    pub findings: Vec<String>,
    pub age_years: i32,
    pub symptom_days: i32,
    #[serde(default)]
    pub prior_treatment: String,
    #[serde(default)]
    pub documents: Vec<DocumentRef>,
    /// The dates whose sold-out clinics the patient asks about (today to
    /// the end of the hospital's release window when absent).
    #[serde(default)]
    pub window_from: Option<NaiveDate>,
    #[serde(default)]
    pub window_to: Option<NaiveDate>,
}

/// The hospital's answer with the id as channels use it.
fn view(hospital: &HospitalId, answer: Forwarded) -> Result<HttpResponse, GatewayError> {
    if !answer.status.is_success() {
        return Ok(answer.into_response());
    }
    let body = channel_view(hospital, &answer.body)?;
    Ok(HttpResponse::build(answer.status).json(body))
}

fn channel_view(hospital: &HospitalId, body: &[u8]) -> Result<serde_json::Value, GatewayError> {
    let mut s: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::Unexpected(anyhow::Error::new(e).context("the hospital's precise submission"))
    })?;
    let id = s["submission_id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| GatewayError::Unexpected(anyhow::anyhow!("a submission without its id")))?;
    s["submission_id"] = BookingRef::new(hospital.clone(), id).to_string().into();
    s["hospital_id"] = hospital.to_string().into();
    Ok(s)
}

#[utoipa::path(
    post,
    path = "/v1/hospitals/{hospital_id}/doctors/{doctor_id}/precise-submissions",
    tag = "precise",
    params(
        ("hospital_id" = String, Path, description = "e.g. `pumch`"),
        ("doctor_id" = String, Path, description = "The hospital's doctor id"),
    ),
    request_body = SubmissionRequest,
    responses(
        (status = 201, description = "Submitted: `matched` by the expert's rule (then `seated`: `booking_id` is a hold of this app's, announced as `booking.offered`), or `pending` the hospital's decision", body = serde_json::Value),
        (status = 200, description = "The patient's open submission to this doctor, unchanged", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD (naming the field), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_FAMILY_MEMBER, CARD_UNUSABLE, PATIENT_BARRED", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, DOCTOR_NOT_FOUND, PRECISE_PROFILE_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "CLINIC_NOT_SOLD_OUT (a released clinic of the doctor in the window still has a seat for this channel, or none is released), PRECISE_ALREADY_SUBMITTED", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/hospitals/{hospital_id}/doctors/{doctor_id}/precise-submissions")]
#[tracing::instrument(skip_all)]
pub async fn submit(
    state: web::Data<GatewayState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: Json<SubmissionRequest>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = hospital_of(&path.0)?;
    let doctor = doctor_id(&path.1)?;
    state.upstreams.route(&hospital)?;
    let b = body.0;
    let card = CardRef {
        card_number: b.card_number.as_deref(),
        ecard_token: b.ecard_token.as_deref(),
    };
    let patient = super::patient_actions::acting_unbarred(&state, card, b.patient_id).await?;
    let upstream = serde_json::to_vec(&serde_json::json!({
        "patient_id": patient,
        "channel": caller.channel,
        "diagnosis_codes": b.diagnosis_codes,
        "findings": b.findings,
        "age_years": b.age_years,
        "symptom_days": b.symptom_days,
        "prior_treatment": b.prior_treatment,
        "documents": b.documents,
        "window_from": b.window_from,
        "window_to": b.window_to,
    }))
    .map_err(|e| GatewayError::Unexpected(e.into()))?;
    // The seat a match gets belongs to this app.
    let headers = super::patient_actions::app_headers(&caller)?;
    let answer = state
        .upstreams
        .forward(
            &hospital,
            reqwest::Method::POST,
            &format!("/v1/doctors/{doctor}/precise-submissions"),
            headers,
            Some(upstream),
        )
        .await?;
    if answer.status.is_success()
        && let Ok(s) = serde_json::from_slice::<serde_json::Value>(&answer.body)
        && let Some(booking) = s["booking_id"].as_str()
    {
        state.notifier.remember_booking(booking, &caller.app_id).await;
    }
    view(&hospital, answer)
}

#[utoipa::path(
    get,
    path = "/v1/precise-submissions/{submission_id}",
    tag = "precise",
    params(
        ("submission_id" = String, Path, description = "`<hospital>-<uuid>`, as the submission answered it"),
        ("X-Patient-Card" = Option<String>, Header, description = "From an app other than the one that submitted: the patient's platform card number, as their consent"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "Or the patient's e-card QR token (at most one of the two)"),
    ),
    responses(
        (status = 200, description = "The submission: `pending`, `matched` (waiting for the doctor's next session), `seated` (with `booking_id`) or `rejected` (with `decision_reason`)", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_BOOKING: another app's submission (or none: a refusal never tells which) without the patient's own card; CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/precise-submissions/{submission_id}")]
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<GatewayState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let (submission, answer) = crate::booking::read_referenced_as_owner(
        &state,
        &caller,
        &req,
        &path,
        "submission_id",
        |s| format!("/v1/precise-submissions/{}", s.id),
        "a precise submission",
    )
    .await?;
    Ok(HttpResponse::Ok().json(channel_view(&submission.hospital, &answer.body)?))
}
