use actix_web::{HttpRequest, HttpResponse, get, post, web};
use jyt_domain::{BookingRef, Channel, SlotRef};
use jyt_web::{IdempotencyKeyHeader, Json, RequestError};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::booking::{BookingAttempt, HospitalApi, as_card_header, authorize, book, patient_card_headers};
use crate::error::GatewayError;
use crate::identity::CardRef;
use crate::state::{Caller, GatewayState};

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
    /// For the `referral` channel only: the id of the referral (医联体 green
    /// channel) a family doctor of the patient's signed team issued to this
    /// hospital (`POST /federation/v1/hospitals/{centre}/referrals`). The
    /// hospital's booking script checks it (REFERRAL_UNKNOWN,
    /// REFERRAL_EXPIRED, REFERRAL_USED, REFERRAL_NOT_FOR_DEPARTMENT,
    /// REFERRAL_OF_ANOTHER_PATIENT) and uses it with the seat, once.
    #[serde(default)]
    pub referral_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/bookings",
    tag = "bookings",
    request_body = BookRequest,
    params(("Idempotency-Key" = String, Header, description = "Same key, same answer; required")),
    responses(
        (status = 201, description = "Booked (or held until paid); the hospital's booking", body = serde_json::Value),
        (status = 202, description = "A lottery schedule in its window: the patient's draw entry (`entry_id`, `schedule_id`, `draw_at`), the same one however often they press; the outcome comes as a `draw.won` or `draw.lost` notice and from `GET /v1/draw-entries/{entry_id}`", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD, MISSING_HEADER, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "PATIENT_BARRED (with barred_until), NOT_FAMILY_MEMBER, CARD_UNUSABLE, REFERRAL_OF_ANOTHER_PATIENT", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, SLOT_NOT_FOUND, CARD_NOT_FOUND, REFERRAL_UNKNOWN", body = crate::openapi::ProblemDoc),
        (status = 409, description = "SLOT_SOLD_OUT, ALREADY_BOOKED, IDEMPOTENCY_KEY_REUSED, DAILY_LIMIT_REACHED, REFERRAL_EXPIRED, REFERRAL_USED, REFERRAL_NOT_FOR_DEPARTMENT, LOTTERY_DRAW_PENDING (a lottery's window closed and its draw is running; with draw_at and Retry-After)", body = crate::openapi::ProblemDoc),
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

#[utoipa::path(
    get,
    path = "/v1/bookings/{booking_id}",
    tag = "bookings",
    params(
        ("booking_id" = String, Path, description = "`<hospital>-<uuid>`"),
        ("X-Patient-Card" = Option<String>, Header, description = "From an app other than the booking's own (`owner_app`): the patient's platform card number, as their consent. A header, so it stays out of access logs"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "Or the patient's e-card QR token (at most one of the two)"),
    ),
    responses(
        (status = 200, description = "The booking, with `owner_app`: the channel app it belongs to (`null`: none)", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD (naming the header for a malformed card), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_BOOKING: another app's (or no app's) booking, without the patient's own card; CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, BOOKING_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE (also when the hospital cannot say whose booking it is), IDENTITY_UNAVAILABLE, CACHE_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/bookings/{booking_id}")]
pub async fn get(
    state: web::Data<GatewayState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let booking: BookingRef = path
        .into_inner()
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("booking_id", e.to_string()))?;
    let card = patient_card_headers(&req)?;
    // The owner's check may have read the booking already: not twice.
    if let Some(read) = authorize(&state, &caller, &booking, card)
        .await
        .map_err(as_card_header)?
    {
        return Ok(read.into_response());
    }
    state
        .upstreams
        .booking(&booking)
        .await
        .map(crate::upstream::Forwarded::into_response)
}
