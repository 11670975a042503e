use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use jyt_domain::{BookingRef, Channel, IdempotencyKey, SlotRef};
use jyt_web::extract::IDEMPOTENCY_KEY;
use jyt_web::{IdempotencyKeyHeader, Json, RequestError};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::state::{Caller, GatewayState};
use crate::upstream::Forwarded;

/// `POST /v1/bookings`: book a time segment. The acting patient is named
/// by exactly one of `card_number` and `ecard_token`; `patient_id`, when
/// given, must be that patient or one of their bound family members.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    /// `<hospital>-<segment uuid>`, as listed by `/v1/hospitals/{id}/schedules`.
    #[schema(value_type = String, example = "pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")]
    pub slot_id: SlotRef,
    /// The acting patient's platform card number (16 digits).
    #[serde(default)]
    pub card_number: Option<String>,
    /// Or the acting patient's e-card QR token.
    #[serde(default)]
    pub ecard_token: Option<String>,
    /// Whom to book: the card holder (the default) or a bound family member.
    #[serde(default)]
    pub patient_id: Option<Uuid>,
    /// Optional; must be the signing app's channel kind when given.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "wechat")]
    pub channel: Option<Channel>,
    /// For the `referral` channel: the community hospital's referral (医联体
    /// green channel) entitling the patient to the referral pool; checked
    /// by the hospital.
    #[serde(default)]
    pub referral_id: Option<String>,
}

/// What slot-inventory is sent: the identity the gateway established.
#[derive(Serialize)]
struct HospitalBookRequest<'a> {
    slot_id: &'a SlotRef,
    patient_id: Uuid,
    channel: Channel,
    #[serde(skip_serializing_if = "Option::is_none")]
    referral_id: Option<&'a str>,
}

#[utoipa::path(
    post,
    path = "/v1/bookings",
    tag = "bookings",
    request_body = BookRequest,
    params(("Idempotency-Key" = String, Header, description = "Same key, same answer; required")),
    responses(
        (status = 201, description = "Booked (or held until paid); the hospital's booking", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD, MISSING_HEADER, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "PATIENT_BARRED (with barred_until), NOT_FAMILY_MEMBER, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, SLOT_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "SLOT_SOLD_OUT, ALREADY_BOOKED, IDEMPOTENCY_KEY_REUSED, DAILY_LIMIT_REACHED", body = crate::openapi::ProblemDoc),
        (status = 413, description = "BODY_TOO_LARGE", body = crate::openapi::ProblemDoc),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, CACHE_UNAVAILABLE, DATABASE_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/bookings")]
#[tracing::instrument(skip_all, fields(slot = %body.0.slot_id, app = %caller.app_id))]
pub async fn create(
    state: web::Data<GatewayState>,
    caller: Caller,
    key: IdempotencyKeyHeader,
    body: Json<BookRequest>,
) -> Result<HttpResponse, GatewayError> {
    let req = body.0;
    if req.channel.is_some_and(|c| c != caller.channel) {
        return Err(RequestError::invalid("channel", "must be the channel app's own channel").into());
    }
    let attempt = BookingAttempt {
        slot: &req.slot_id,
        card: CardRef {
            card_number: req.card_number.as_deref(),
            ecard_token: req.ecard_token.as_deref(),
        },
        patient_id: req.patient_id,
        referral: req.referral_id.as_deref(),
        key: &key.0,
    };
    let answer = book(&state, &caller, &attempt, HospitalApi::Json).await?;
    Ok(answer.into_response())
}

/// One booking request, whichever door it came through (`/v1/bookings`
/// or FHIR `Appointment/$hold`).
pub struct BookingAttempt<'a> {
    pub slot: &'a SlotRef,
    pub card: CardRef<'a>,
    /// Whom to book, when not the card holder: a bound family member.
    pub patient_id: Option<Uuid>,
    pub referral: Option<&'a str>,
    pub key: &'a IdempotencyKey,
}

/// How the hospital is asked to book: its JSON API or its FHIR operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HospitalApi {
    /// `POST /v1/bookings`; the answer's `booking_id` names the booking.
    Json,
    /// `POST /fhir/Appointment/$hold`; the Appointment's `id` names it.
    Fhir,
}

/// The booking pipeline every booking door shares: identity, family,
/// anti-scalping and rate limits, standing, the city-wide daily limit,
/// then the hospital; the owning app is recorded on success. One
/// function, so the rules cannot drift apart between doors.
pub async fn book(
    state: &GatewayState,
    caller: &Caller,
    attempt: &BookingAttempt<'_>,
    api: HospitalApi,
) -> Result<Forwarded, GatewayError> {
    let now = Utc::now();
    let slot = attempt.slot;
    // A stranger hospital is refused before anyone is asked anything.
    state.upstreams.route(&slot.hospital)?;
    let mut headers = HeaderMap::new();
    let key_header = HeaderValue::from_str(attempt.key.as_str())
        .map_err(|_| RequestError::invalid(IDEMPOTENCY_KEY, "must be visible ASCII"))?;
    headers.insert(IDEMPOTENCY_KEY, key_header);

    let (holder, patient) = state
        .patients
        .acting(attempt.card, attempt.patient_id, now)
        .await?;

    // Anti-scalping and limits, cheapest first.
    let _in_flight = state.limits.enter(holder)?;
    state.limits.check_person(holder, now)?;
    if let Some(address) = caller.address.as_deref()
        && state.limits.address_rules_apply(caller.channel)
    {
        state.limits.admit_person_from(address, patient, now).await?;
    }
    if let Some(until) = state.patients.barred_until(patient, now).await? {
        return Err(GatewayError::PatientBarred { until });
    }
    let request_id = format!("{}|{}|{}", caller.app_id, attempt.key.as_str(), slot);
    let reservation = state.limits.reserve_daily(patient, &request_id, now).await?;

    let (path, upstream_body) = match api {
        HospitalApi::Json => (
            "/v1/bookings",
            serde_json::to_vec(&HospitalBookRequest {
                slot_id: slot,
                patient_id: patient,
                channel: caller.channel,
                referral_id: attempt.referral,
            }),
        ),
        HospitalApi::Fhir => {
            headers.extend(crate::fhir::public_headers(&state.settings.fhir));
            headers.insert(
                crate::fhir::CHANNEL_HEADER,
                HeaderValue::from_static(caller.channel.as_str()),
            );
            (
                "/fhir/Appointment/$hold",
                serde_json::to_vec(&crate::fhir::hold_parameters(slot, patient, attempt.referral)),
            )
        }
    };
    let upstream_body = upstream_body.map_err(|e| GatewayError::Unexpected(e.into()))?;
    let answer = state
        .upstreams
        .forward(
            &slot.hospital,
            reqwest::Method::POST,
            path,
            headers,
            Some(upstream_body),
        )
        .await;
    // Give the day's reservation back only on a definite refusal: a 4xx, or
    // the hospital's own 503 (its lock or database briefly unavailable:
    // nothing was written). After a timeout the booking may have been
    // made, and a retry with the same Idempotency-Key reuses this
    // reservation anyway.
    let refused = |r: &Forwarded| {
        r.status.is_client_error() || r.status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE
    };
    if reservation.newly_taken && answer.as_ref().is_ok_and(refused) {
        state.limits.release_daily(&reservation).await;
    }
    let answer = answer?;
    let id_field = match api {
        HospitalApi::Json => "booking_id",
        HospitalApi::Fhir => "id",
    };
    if answer.status.is_success()
        && let Some(booking) = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|b| b[id_field].as_str().map(str::to_owned))
    {
        // The booking's later events (停诊, cancellation, ...) go back to this app.
        state.notifier.remember_booking(&booking, &caller.app_id).await;
    }
    Ok(answer)
}

#[utoipa::path(
    get,
    path = "/v1/bookings/{booking_id}",
    tag = "bookings",
    params(("booking_id" = String, Path, description = "`<hospital>-<uuid>`")),
    responses(
        (status = 200, description = "The booking", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_BOOKING", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, BOOKING_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, CACHE_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/bookings/{booking_id}")]
pub async fn get(
    state: web::Data<GatewayState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let booking: BookingRef = path
        .into_inner()
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("booking_id", e.to_string()))?;
    ensure_owner(&state, &caller, &booking).await?;
    state
        .upstreams
        .call(
            &booking.hospital,
            reqwest::Method::GET,
            &format!("/v1/bookings/{booking}"),
            HeaderMap::new(),
            None,
        )
        .await
}

/// Only the channel app that made the booking, and only while that is
/// recorded: a booking made at a window or by the hospital, or whose
/// record is gone, is not shown or paid by id alone (fails closed).
pub async fn ensure_owner(
    state: &GatewayState,
    caller: &Caller,
    booking: &BookingRef,
) -> Result<(), GatewayError> {
    match state.notifier.booking_app(&booking.to_string()).await? {
        Some(owner) if owner == caller.app_id => Ok(()),
        _ => Err(GatewayError::NotYourBooking),
    }
}
