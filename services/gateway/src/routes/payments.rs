//! `POST /v1/bookings/{id}/payments`: a channel's signed payment
//! notification. The rules (idempotency, prepaid debit, late payment
//! refunds) are in [`crate::payment`], shared with FHIR `$book`.

use actix_web::{HttpResponse, post, web};
use jyt_domain::BookingRef;
use jyt_web::{Json, RequestError};

use crate::error::GatewayError;
use crate::payment::{PaymentRequest, Settled, settle};
use crate::state::{Caller, GatewayState};

#[utoipa::path(
    post,
    path = "/v1/bookings/{booking_id}/payments",
    tag = "bookings",
    request_body = PaymentRequest,
    params(("booking_id" = String, Path, description = "`<hospital>-<uuid>`")),
    responses(
        (status = 200, description = "Paid: the confirmed booking", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, MALFORMED_JSON, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_BOOKING (another app's, or no app's, booking without the patient's own card), NOT_FAMILY_MEMBER, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, BOOKING_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "HOLD_EXPIRED (with `refund`), INSUFFICIENT_BALANCE, PAYMENT_IN_PROGRESS, ALREADY_CONFIRMED, PAYMENT_REFERENCE_USED (the channel's transaction id already paid another booking), BOOKING_NOT_HELD", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, CACHE_UNAVAILABLE; retry the same request", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/bookings/{booking_id}/payments")]
#[tracing::instrument(skip_all, fields(booking = %path, app = %caller.app_id))]
pub async fn pay(
    state: web::Data<GatewayState>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<PaymentRequest>,
) -> Result<HttpResponse, GatewayError> {
    let booking: BookingRef = path
        .as_str()
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("booking_id", e.to_string()))?;
    settle(&state, &caller, &booking, &body.0)
        .await
        .map(Settled::into_response)
}
