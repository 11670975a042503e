//! The federation API: member hospitals' HIS systems publish schedules,
//! add capacity, stop clinics, book in-clinic follow-ups, report visit
//! progress and poll their bookings feed. Requests are signed like the
//! channels' (see [`jyt_signing::channel`]) with the hospital's key id in
//! `X-App-Id`; a hospital touches only its own data: any other hospital's
//! id in the path answers `403 HOSPITAL_FORBIDDEN`.

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use chrono::Utc;
use jyt_domain::{BookingRef, Channel, HospitalId, SlotRef};
use jyt_web::extract::IDEMPOTENCY_KEY;
use jyt_web::{IdempotencyKeyHeader, Json, RequestError};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::state::{GatewayState, HospitalCaller};

/// The path's hospital, if it is the caller's own.
pub(crate) fn own(caller: &HospitalCaller, raw: &str) -> Result<HospitalId, GatewayError> {
    let id: HospitalId = raw
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("hospital_id", e.to_string()))?;
    if id != caller.hospital {
        return Err(GatewayError::HospitalForbidden);
    }
    Ok(id)
}

fn own_booking(caller: &HospitalCaller, raw: &str) -> Result<BookingRef, GatewayError> {
    let booking: BookingRef = raw
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("booking_id", e.to_string()))?;
    if booking.hospital != caller.hospital {
        return Err(GatewayError::HospitalForbidden);
    }
    Ok(booking)
}

fn uuid_of(field: &'static str, raw: &str) -> Result<Uuid, GatewayError> {
    Uuid::parse_str(raw).map_err(|_| RequestError::invalid(field, "must be a UUID").into())
}

async fn pass(
    state: &GatewayState,
    hospital: &HospitalId,
    method: reqwest::Method,
    path: &str,
    body: Option<web::Bytes>,
) -> Result<HttpResponse, GatewayError> {
    pass_with(state, hospital, method, path, HeaderMap::new(), body).await
}

async fn pass_with(
    state: &GatewayState,
    hospital: &HospitalId,
    method: reqwest::Method,
    path: &str,
    headers: HeaderMap,
    body: Option<web::Bytes>,
) -> Result<HttpResponse, GatewayError> {
    let answer = state
        .upstreams
        .forward(hospital, method, path, headers, body.map(|b| b.to_vec()))
        .await?;
    Ok(answer.into_response())
}

/// The hospital's key named as the actor of a change (capacity, stop), for
/// the audit trail; key ids are plain ASCII names from settings.
fn actor_headers(caller: &HospitalCaller) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("hospital-key:{}", caller.key_id)) {
        headers.insert("X-Actor", value);
    }
    headers
}

/// Idempotent bulk upsert of departments, doctors and schedules (with
/// segments and capacities), keyed by the hospital's own ids.
#[utoipa::path(
    put, path = "/federation/v1/hospitals/{hospital_id}/schedules", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital")),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 200, description = "Published: departments, doctors and schedules upserted by the hospital's own ids", body = serde_json::Value),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
        (status = 409, description = "A change the hospital's bookings forbid (a segment below its bookings)", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[put("/hospitals/{hospital_id}/schedules")]
pub async fn publish(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, GatewayError> {
    let hospital = own(&caller, &path)?;
    pass(
        &state,
        &hospital,
        reqwest::Method::PUT,
        "/v1/schedules",
        Some(body),
    )
    .await
}

/// 加号: a segment's new capacity; new seats go to the waitlist first.
#[utoipa::path(
    put, path = "/federation/v1/hospitals/{hospital_id}/segments/{segment_id}/capacity", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital"), ("segment_id" = String, Path, description = "The segment's UUID")),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 200, description = "加号: the new capacity; new seats go to the waitlist first", body = serde_json::Value),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
        (status = 409, description = "Below the seats already booked", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[put("/hospitals/{hospital_id}/segments/{segment_id}/capacity")]
pub async fn set_capacity(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, GatewayError> {
    let hospital = own(&caller, &path.0)?;
    let segment = uuid_of("segment_id", &path.1)?;
    let target = format!("/v1/segments/{segment}/capacity");
    let headers = actor_headers(&caller);
    pass_with(
        &state,
        &hospital,
        reqwest::Method::PUT,
        &target,
        headers,
        Some(body),
    )
    .await
}

/// 停诊, with a reason.
#[utoipa::path(
    post, path = "/federation/v1/hospitals/{hospital_id}/schedules/{schedule_id}/stop", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital"), ("schedule_id" = String, Path, description = "The schedule's UUID")),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 200, description = "停诊: bookings stopped, refunds requested, offers made", body = serde_json::Value),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
        (status = 409, description = "Not stoppable", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[post("/hospitals/{hospital_id}/schedules/{schedule_id}/stop")]
pub async fn stop(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, GatewayError> {
    let hospital = own(&caller, &path.0)?;
    let schedule = uuid_of("schedule_id", &path.1)?;
    let target = format!("/v1/schedules/{schedule}/stop");
    let headers = actor_headers(&caller);
    pass_with(
        &state,
        &hospital,
        reqwest::Method::POST,
        &target,
        headers,
        Some(body),
    )
    .await
}

/// The patient arrived at the hospital (`arrive`) or the visit ended
/// (`complete`).
#[utoipa::path(
    post, path = "/federation/v1/hospitals/{hospital_id}/bookings/{booking_id}/{step}", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital"), ("booking_id" = String, Path, description = "`<hospital>-<uuid>`"), ("step" = String, Path, description = "`arrive` or `complete`")),
    responses(
        (status = 200, description = "The booking after the step", body = serde_json::Value),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
        (status = 409, description = "NOT_COMPLETABLE, NOT_CHECK_INABLE", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[post("/hospitals/{hospital_id}/bookings/{booking_id}/{step}")]
pub async fn visit_step(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = own(&caller, &path.0)?;
    let booking = own_booking(&caller, &path.1)?;
    let step = match path.2.as_str() {
        "arrive" => "arrive",
        "complete" => "complete",
        _ => return Err(RequestError::invalid("step", "must be `arrive` or `complete`").into()),
    };
    let target = format!("/v1/bookings/{booking}/{step}");
    pass(&state, &hospital, reqwest::Method::POST, &target, None).await
}

/// Booking changes after `since` (the previous page's `next`), in order,
/// each exactly once.
#[utoipa::path(
    get, path = "/federation/v1/hospitals/{hospital_id}/feed", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital"), ("since" = Option<i64>, Query, description = "The previous page's `next`"), ("limit" = Option<i64>, Query, description = "Page size")),
    responses(
        (status = 200, description = "Booking changes and capacity requests after `since`, in order, each once", body = serde_json::Value),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[get("/hospitals/{hospital_id}/feed")]
pub async fn feed(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, GatewayError> {
    let hospital = own(&caller, &path)?;
    let target = match req.query_string() {
        "" => "/v1/feed".to_owned(),
        q => format!("/v1/feed?{q}"),
    };
    pass(&state, &hospital, reqwest::Method::GET, &target, None).await
}

/// 诊间预约: during a visit the doctor books the patient's follow-up from
/// the schedule's `clinic` pool. It belongs to the patient's own channel
/// app (`owner_app`), which reads and pays it: the app of the booking it
/// follows, when `follows_booking_id` names one (the same patient's, at
/// this hospital) that was made through an app; else the app of the
/// patient's most recent booking at this hospital made through an app;
/// else none (then only with the patient's card). Any other channel app
/// acts on it with the patient's own card.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpRequest {
    pub slot_id: SlotRef,
    /// The patient's platform card, as presented at the visit.
    pub card_number: String,
    /// The visit the follow-up follows (`<hospital>-<uuid>`), if known.
    #[serde(default)]
    pub follows_booking_id: Option<BookingRef>,
}

#[derive(Serialize)]
struct HospitalBookRequest<'a> {
    slot_id: &'a SlotRef,
    patient_id: Uuid,
    channel: Channel,
    #[serde(skip_serializing_if = "Option::is_none")]
    follows_booking_id: Option<&'a BookingRef>,
}

#[utoipa::path(
    post, path = "/federation/v1/hospitals/{hospital_id}/follow-ups", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital"), ("Idempotency-Key" = String, Header, description = "Same key, same answer")),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 201, description = "诊间预约: the follow-up booking, owned by the patient's app", body = serde_json::Value),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
        (status = 409, description = "SLOT_SOLD_OUT, ALREADY_BOOKED, IDEMPOTENCY_KEY_REUSED and the other booking rules", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[post("/hospitals/{hospital_id}/follow-ups")]
pub async fn follow_up(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<String>,
    key: IdempotencyKeyHeader,
    body: Json<FollowUpRequest>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = own(&caller, &path)?;
    if body.0.slot_id.hospital != hospital {
        return Err(GatewayError::HospitalForbidden);
    }
    if body
        .0
        .follows_booking_id
        .as_ref()
        .is_some_and(|b| b.hospital != hospital)
    {
        return Err(RequestError::invalid("follows_booking_id", "must be a booking at this hospital").into());
    }
    let patient = state
        .patients
        .resolve(
            CardRef {
                card_number: Some(body.0.card_number.as_str()),
                ecard_token: None,
            },
            Utc::now(),
        )
        .await?;
    let mut headers = HeaderMap::new();
    let key_header = HeaderValue::from_str(key.0.as_str())
        .map_err(|_| RequestError::invalid(IDEMPOTENCY_KEY, "must be visible ASCII"))?;
    headers.insert(IDEMPOTENCY_KEY, key_header);
    let upstream = serde_json::to_vec(&HospitalBookRequest {
        slot_id: &body.0.slot_id,
        patient_id: patient,
        channel: Channel::Clinic,
        follows_booking_id: body.0.follows_booking_id.as_ref(),
    })
    .map_err(|e| GatewayError::Unexpected(e.into()))?;
    let answer = state
        .upstreams
        .forward(
            &hospital,
            reqwest::Method::POST,
            "/v1/bookings",
            headers,
            Some(upstream),
        )
        .await?;
    if answer.status.is_success()
        && let Ok(booked) = serde_json::from_slice::<serde_json::Value>(&answer.body)
        && let (Some(id), Some(owner)) = (booked["booking_id"].as_str(), booked["owner_app"].as_str())
    {
        // Cached like a channel's own booking (the hospital's row says it anyway).
        state.notifier.remember_booking(id, owner).await;
    }
    Ok(answer.into_response())
}
