//! What a patient does after booking, through their channel: cancel, join
//! a full clinic's waitlist (候补), check in at a kiosk (取号). The acting
//! patient is named by their card or e-card, as for a booking; the
//! hospital then checks that the booking is theirs, so a channel app
//! cannot act on another patient's booking without that patient's card.

use actix_web::{HttpResponse, post, web};
use chrono::Utc;
use jyt_domain::{BookingRef, HospitalId};
use jyt_web::{Json, RequestError};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::state::{Caller, GatewayState};

/// The acting patient: one of `card_number` and `ecard_token`, and
/// optionally a bound family member to act for.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientRequest {
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub ecard_token: Option<String>,
    #[serde(default)]
    pub patient_id: Option<Uuid>,
}

/// The patient the request acts for, after the card and family checks.
async fn acting_patient(state: &GatewayState, req: &PatientRequest) -> Result<Uuid, GatewayError> {
    let card = CardRef {
        card_number: req.card_number.as_deref(),
        ecard_token: req.ecard_token.as_deref(),
    };
    let (_, patient) = state.patients.acting(card, req.patient_id, Utc::now()).await?;
    Ok(patient)
}

/// The patient a request acts for (card checks, family binding), unless
/// barred for no-shows: what joining a line or submitting a history needs.
pub(crate) async fn acting_unbarred(
    state: &GatewayState,
    card: CardRef<'_>,
    family_member: Option<Uuid>,
) -> Result<Uuid, GatewayError> {
    let now = Utc::now();
    let (_, patient) = state.patients.acting(card, family_member, now).await?;
    if let Some(until) = state.patients.barred_until(patient, now).await? {
        return Err(GatewayError::PatientBarred { until });
    }
    Ok(patient)
}

/// `Jyt-App`: what the platform makes for the patient (a promotion's
/// booking, a 加号 seat) belongs to the calling app.
pub(crate) fn app_headers(caller: &Caller) -> Result<HeaderMap, GatewayError> {
    let mut headers = HeaderMap::new();
    headers.insert(crate::booking::APP_HEADER, crate::booking::app_header(caller)?);
    Ok(headers)
}

fn booking_of(raw: &str) -> Result<BookingRef, GatewayError> {
    raw.parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("booking_id", e.to_string()).into())
}

fn json(body: &serde_json::Value) -> Result<Vec<u8>, GatewayError> {
    serde_json::to_vec(body).map_err(|e| GatewayError::Unexpected(e.into()))
}

/// Cancel a booking: through any channel app (the booking's own or
/// another), always with the patient's own card, their consent; the
/// hospital then checks the booking is that patient's.
#[utoipa::path(
    post,
    path = "/v1/bookings/{booking_id}/cancel",
    tag = "bookings",
    params(("booking_id" = String, Path, description = "`<hospital>-<uuid>`")),
    request_body = PatientRequest,
    responses(
        (status = 200, description = "Cancelled; a paid booking's refund is requested", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_FAMILY_MEMBER, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, BOOKING_NOT_FOUND (also for another patient's booking), CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "CANCELLATION_CLOSED (with deadline), BOOKING_NOT_CANCELLABLE", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/bookings/{booking_id}/cancel")]
pub async fn cancel(
    _caller: Caller,
    state: web::Data<GatewayState>,
    path: web::Path<String>,
    body: Json<PatientRequest>,
) -> Result<HttpResponse, GatewayError> {
    let booking = booking_of(&path)?;
    state.upstreams.route(&booking.hospital)?;
    let patient = acting_patient(&state, &body.0).await?;
    let upstream = json(&serde_json::json!({ "patient_id": patient }))?;
    state
        .upstreams
        .call(
            &booking.hospital,
            reqwest::Method::POST,
            &format!("/v1/bookings/{booking}/cancel"),
            HeaderMap::new(),
            Some(upstream),
        )
        .await
}

#[utoipa::path(
    post,
    path = "/v1/hospitals/{hospital_id}/schedules/{schedule_id}/waitlist",
    tag = "bookings",
    params(
        ("hospital_id" = String, Path, description = "e.g. `pumch`"),
        ("schedule_id" = String, Path, description = "The schedule's uuid, as listed by `/v1/hospitals/{id}/schedules`"),
    ),
    request_body = PatientRequest,
    responses(
        (status = 201, description = "On the waitlist, with the place in line; `entry_id` (`<hospital>-<uuid>`) reads it again with `GET /v1/waitlist/{entry_id}`", body = super::waitlist::WaitlistEntryView),
        (status = 200, description = "Already on it: the same place", body = super::waitlist::WaitlistEntryView),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_FAMILY_MEMBER, CARD_UNUSABLE, PATIENT_BARRED", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, SCHEDULE_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "SEATS_AVAILABLE (a seat this channel may book is left: its pool or common, any pool after the merge time), SCHEDULE_ALREADY_BOOKED, SCHEDULE_STOPPED, NOT_YET_RELEASED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/hospitals/{hospital_id}/schedules/{schedule_id}/waitlist")]
pub async fn join_waitlist(
    state: web::Data<GatewayState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: Json<PatientRequest>,
) -> Result<HttpResponse, GatewayError> {
    let hospital: HospitalId = path
        .0
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("hospital_id", e.to_string()))?;
    let schedule =
        Uuid::parse_str(&path.1).map_err(|_| RequestError::invalid("schedule_id", "must be a UUID"))?;
    state.upstreams.route(&hospital)?;
    let card = CardRef {
        card_number: body.0.card_number.as_deref(),
        ecard_token: body.0.ecard_token.as_deref(),
    };
    let patient = acting_unbarred(&state, card, body.0.patient_id).await?;
    let upstream = json(&serde_json::json!({ "patient_id": patient, "channel": caller.channel }))?;
    // A promotion's booking will belong to this app.
    let headers = app_headers(&caller)?;
    let answer = state
        .upstreams
        .forward(
            &hospital,
            reqwest::Method::POST,
            &format!("/v1/schedules/{schedule}/waitlist"),
            headers,
            Some(upstream),
        )
        .await?;
    // The entry id as `GET /v1/waitlist/{entry_id}` takes it.
    super::waitlist::joined(&hospital, answer)
}

/// 取号 at a kiosk or window: the pick-up code, and either the patient's
/// own card (`card_number` or `ecard_token`, as the kiosk reads it) or,
/// without one, the check-in must come from the app that made the booking.
/// The hospital locks check-in after 5 wrong codes for the booking.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    pub pickup_code: String,
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub ecard_token: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/bookings/{booking_id}/check-in",
    tag = "bookings",
    params(("booking_id" = String, Path, description = "`<hospital>-<uuid>`")),
    request_body = CheckInRequest,
    responses(
        (status = 200, description = "Checked in, with the queue number", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "WRONG_PICKUP_CODE (with attempts_left), NOT_YOUR_BOOKING (no card, and another app's booking)", body = crate::openapi::ProblemDoc),
        (status = 423, description = "PICKUP_LOCKED: 5 wrong codes; check in at the window", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, BOOKING_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "CHECK_IN_CLOSED (with opens_at, closes_at), NOT_CHECK_INABLE", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/bookings/{booking_id}/check-in")]
pub async fn check_in(
    caller: Caller,
    state: web::Data<GatewayState>,
    path: web::Path<String>,
    body: Json<CheckInRequest>,
) -> Result<HttpResponse, GatewayError> {
    let booking = booking_of(&path)?;
    state.upstreams.route(&booking.hospital)?;
    let req = body.0;
    // Guessing pick-up codes needs the booking's own patient or app: a
    // stranger's guesses never reach the hospital's counter of wrong codes.
    let upstream = if req.card_number.is_some() || req.ecard_token.is_some() {
        let card = CardRef {
            card_number: req.card_number.as_deref(),
            ecard_token: req.ecard_token.as_deref(),
        };
        let patient = state.patients.resolve(card, Utc::now()).await?;
        json(&serde_json::json!({ "pickup_code": req.pickup_code, "patient_id": patient }))?
    } else {
        crate::booking::ensure_owner(&state, &caller, &booking, None).await?;
        json(&serde_json::json!({ "pickup_code": req.pickup_code }))?
    };
    state
        .upstreams
        .call(
            &booking.hospital,
            reqwest::Method::POST,
            &format!("/v1/bookings/{booking}/check-in"),
            HeaderMap::new(),
            Some(upstream),
        )
        .await
}
