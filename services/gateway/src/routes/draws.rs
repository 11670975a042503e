//! Fair release by lottery, as channels and hospitals read it: a patient's
//! entry (`202` to `POST /v1/bookings` on a lottery schedule in its window)
//! and, for the hospital (federation key) and operators (the console's
//! relay, in `crate::routes::ops`), the schedule's whole draw record with
//! the hospital's reproduction check. Only the channel app that entered
//! (the entry's `owner_app`) reads an entry by its id alone; another app
//! needs the patient's own card, as for waitlist places.

use actix_web::{HttpRequest, HttpResponse, get, web};
use jyt_web::RequestError;
use reqwest::header::HeaderMap;
use uuid::Uuid;

use crate::booking::read_referenced_as_owner;
use crate::error::GatewayError;
use crate::state::{Caller, GatewayState, HospitalCaller};

/// A patient's lottery entry and, once drawn, its outcome.
#[utoipa::path(
    get,
    path = "/v1/draw-entries/{entry_id}",
    tag = "bookings",
    params(
        ("entry_id" = String, Path, description = "`<hospital>-<uuid>`, as the 202 to a booking attempt in a lottery's window answered it"),
        ("X-Patient-Card" = Option<String>, Header, description = "From an app other than the one that entered: the patient's platform card number, as their consent"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "Or the patient's e-card QR token (at most one of the two)"),
    ),
    responses(
        (status = 200, description = "The entry: `status` `entered`, `won` (with `booking_id`) or `lost` (with `lost_reason`); `draw_at` when the window closes", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD (entry_id, or naming the header of a malformed card)", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_BOOKING: another app's entry (or no such entry: a refusal never tells which) without the patient's own card", body = crate::openapi::ProblemDoc),
        (status = 404, description = "HOSPITAL_NOT_FOUND, CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/draw-entries/{entry_id}")]
#[tracing::instrument(skip_all)]
pub async fn entry(
    state: web::Data<GatewayState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let (_, answer) = read_referenced_as_owner(
        &state,
        &caller,
        &req,
        &path,
        "entry_id",
        |entry| format!("/v1/draw-entries/{entry}"),
        "a lottery entry",
    )
    .await?;
    Ok(answer.into_response())
}

/// A schedule's draw record, for the hospital's own HIS (and regulator
/// tooling it runs): seed, entrants in canonical order, permutation, each
/// outcome, and the hospital's recomputation of the permutation.
#[utoipa::path(
    get, path = "/federation/v1/hospitals/{hospital_id}/schedules/{schedule_id}/draw", tag = "federation",
    params(("hospital_id" = String, Path, description = "The caller's own hospital"), ("schedule_id" = String, Path, description = "The schedule's UUID")),
    responses(
        (status = 200, description = "The draw record with `reproduction` (`reproduced`: the stored permutation is the one the seed gives)", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD schedule_id", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = crate::openapi::ProblemDoc),
        (status = 404, description = "DRAW_NOT_FOUND: no draw yet (the window is open, or not a lottery schedule)", body = crate::openapi::ProblemDoc),
    ),
    security(("hospital_key" = []))
)]
#[get("/hospitals/{hospital_id}/schedules/{schedule_id}/draw")]
pub async fn federation_record(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = crate::routes::federation::own(&caller, &path.0)?;
    record(&state, &hospital, &path.1).await
}

/// The hospital's draw record of a schedule, as it answered.
pub async fn record(
    state: &GatewayState,
    hospital: &jyt_domain::HospitalId,
    raw_schedule: &str,
) -> Result<HttpResponse, GatewayError> {
    let schedule =
        Uuid::parse_str(raw_schedule).map_err(|_| RequestError::invalid("schedule_id", "must be a UUID"))?;
    let answer = state
        .upstreams
        .forward(
            hospital,
            reqwest::Method::GET,
            &format!("/v1/schedules/{schedule}/draw"),
            HeaderMap::new(),
            None,
        )
        .await?;
    Ok(answer.into_response())
}
