//! A patient's standing (the bar, until when, the no-shows behind it) with
//! their appeals, an appeal against one no-show, and their bookings and
//! waitlist places across the city.
//!
//! An appeal asks the no-show's hospital what it did (its slot-inventory's
//! `no-show-cause`): a stopped clinic (停诊) or an arrival the hospital
//! recorded after the no-show cutoff makes card-issuing grant the appeal at
//! once; otherwise, or when the hospital does not answer, it waits in the
//! operators' queue. Bookings are gathered from every hospital at once,
//! each through its own lane (its timeout, bulkhead and breaker) and all
//! within one deadline; a hospital that does not answer is named in
//! `unavailable_hospitals` while the others' answers stand.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use futures::future::join_all;
use jyt_domain::{BookingRef, HospitalId};
use jyt_web::{Json, RequestError};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::routes::patients::{Access, authorize, json_of, uuid_param};
use crate::state::{Caller, GatewayState};

/// The whole fan-out's deadline: a lane's own timeout ends a slow hospital
/// sooner; this bounds the answer whatever the lanes say.
const GATHER_DEADLINE: Duration = Duration::from_secs(5);

#[utoipa::path(
    get,
    path = "/v1/patients/{person_id}/standing",
    tag = "standing",
    params(
        ("person_id" = Uuid, Path, description = "The patient"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
    ),
    responses(
        (status = 200, description = "`barred`, `barred_until`, `no_shows_in_window`, `threshold`, `window_days`, `no_shows` (each with its `event_id`, booking, hospital, visit date, waived or not) and `appeals`", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/patients/{person_id}/standing")]
pub async fn get(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "person_id")?;
    authorize(&state, &caller, &req, id, Access::Read).await?;
    let mut standing = standing_of(&state, id).await?;
    let appeals = state
        .patients
        .call(Method::GET, &format!("/v1/persons/{id}/appeals"), None, None)
        .await?;
    if !appeals.status.is_success() {
        return Err(GatewayError::IdentityUnavailable(format!(
            "appeals answered {}",
            appeals.status
        )));
    }
    standing["appeals"] = json_of(&appeals)?["appeals"].clone();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(standing))
}

async fn standing_of(state: &GatewayState, id: Uuid) -> Result<serde_json::Value, GatewayError> {
    let answer = state
        .patients
        .call(Method::GET, &format!("/v1/persons/{id}/standing"), None, None)
        .await?;
    if !answer.status.is_success() {
        return Err(GatewayError::IdentityUnavailable(format!(
            "standing answered {}",
            answer.status
        )));
    }
    json_of(&answer)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppealRequest {
    /// The no-show's `event_id`, as the standing lists it.
    pub no_show_event_id: Uuid,
    /// The patient's words, 1 to 500 characters.
    pub reason: String,
}

#[utoipa::path(
    post,
    path = "/v1/patients/{person_id}/appeals",
    tag = "standing",
    request_body = AppealRequest,
    params(
        ("person_id" = Uuid, Path, description = "The patient"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "From an app that did not enrol the patient: their own e-card token"),
    ),
    responses(
        (status = 201, description = "The appeal: `granted` with `automatic: true` when the hospital caused the no-show (the clinic was stopped, or it checked the patient in late; the no-show is waived at once), else `pending` for an operator", body = serde_json::Value),
        (status = 200, description = "This no-show was appealed before: that appeal, whatever became of it", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD (no_show_event_id, reason), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "NO_SHOW_NOT_FOUND (not this patient's)", body = crate::openapi::ProblemDoc),
        (status = 409, description = "NO_SHOW_ALREADY_WAIVED", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/patients/{person_id}/appeals")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn appeal(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<AppealRequest>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "person_id")?;
    let a = body.0;
    let reason = a.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(RequestError::invalid("reason", "must be 1 to 500 characters").into());
    }
    authorize(&state, &caller, &req, id, Access::Act).await?;
    let standing = standing_of(&state, id).await?;
    let event = a.no_show_event_id.to_string();
    let booking = standing["no_shows"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|n| n["event_id"].as_str() == Some(event.as_str()))
        })
        .and_then(|n| n["booking_id"].as_str())
        .and_then(|b| b.parse::<BookingRef>().ok());
    let cause = match &booking {
        Some(b) => hospital_cause(&state, b).await,
        None => None,
    };
    let upstream = serde_json::json!({
        "no_show_event_id": a.no_show_event_id, "reason": reason, "hospital_cause": cause,
    });
    let answer = state
        .patients
        .call(
            Method::POST,
            &format!("/v1/persons/{id}/appeals"),
            Some(&upstream),
            None,
        )
        .await?;
    if answer.status.is_success() {
        // A granted appeal may lift the bar: the next booking must see it.
        state.patients.forget(id).await;
    }
    Ok(answer.into_response())
}

/// The hospital's part in a no-show, as its slot-inventory reports it;
/// `None` (an operator decides) when it has none or does not answer.
async fn hospital_cause(state: &GatewayState, booking: &BookingRef) -> Option<String> {
    let answer = state
        .upstreams
        .forward(
            &booking.hospital,
            Method::GET,
            &format!("/v1/bookings/{booking}/no-show-cause"),
            HeaderMap::new(),
            None,
        )
        .await;
    match answer {
        Ok(a) if a.status.is_success() => serde_json::from_slice::<serde_json::Value>(&a.body)
            .ok()
            .and_then(|v| v["cause"].as_str().map(str::to_owned)),
        Ok(a) => {
            tracing::warn!(hospital = %booking.hospital, status = %a.status, "no-show cause not answered; the appeal waits for an operator");
            None
        }
        Err(e) => {
            tracing::warn!(hospital = %booking.hospital, error = %e, "no-show cause not answered; the appeal waits for an operator");
            None
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/patients/{person_id}/bookings",
    tag = "standing",
    params(
        ("person_id" = Uuid, Path, description = "The patient"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
    ),
    responses(
        (status = 200, description = "`bookings` (every hospital's, latest visit first) and `waitlist` places (entry ids `<hospital>-<uuid>`), and `unavailable_hospitals` ([{hospital_id, reason}]) that did not answer in time", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/patients/{person_id}/bookings")]
pub async fn bookings(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "person_id")?;
    authorize(&state, &caller, &req, id, Access::Read).await?;
    let hospitals: Vec<HospitalId> = state.upstreams.hospitals().map(|(h, _)| h.clone()).collect();
    let asks = hospitals.iter().map(|h| {
        let state = &state;
        async move {
            let path = format!("/v1/patients/{id}/bookings");
            let ask = state
                .upstreams
                .forward(h, Method::GET, &path, HeaderMap::new(), None);
            let outcome = match tokio::time::timeout(GATHER_DEADLINE, ask).await {
                Ok(Ok(a)) if a.status.is_success() => {
                    serde_json::from_slice::<serde_json::Value>(&a.body).map_err(|e| e.to_string())
                }
                Ok(Ok(a)) => Err(format!("answered {}", a.status)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} s", GATHER_DEADLINE.as_secs())),
            };
            (h, outcome)
        }
    });
    let mut all_bookings = Vec::new();
    let mut waitlist = Vec::new();
    let mut unavailable = Vec::new();
    for (hospital, outcome) in join_all(asks).await {
        match outcome {
            Ok(mut answer) => {
                if let Some(b) = answer["bookings"].as_array_mut() {
                    all_bookings.append(b);
                }
                for mut entry in answer["waitlist"].as_array().cloned().unwrap_or_default() {
                    if let Some(raw) = entry["entry_id"].as_str().and_then(|e| e.parse::<Uuid>().ok()) {
                        entry["entry_id"] =
                            serde_json::json!(BookingRef::new(hospital.clone(), raw).to_string());
                    }
                    entry["hospital_id"] = serde_json::json!(hospital);
                    waitlist.push(entry);
                }
            }
            Err(reason) => unavailable.push(serde_json::json!({ "hospital_id": hospital, "reason": reason })),
        }
    }
    let starts = |v: &serde_json::Value| v["segment_starts_at"].as_str().unwrap_or_default().to_owned();
    all_bookings.sort_by_key(|b| std::cmp::Reverse(starts(b)));
    waitlist.sort_by_key(|w| std::cmp::Reverse(w["created_at"].as_str().unwrap_or_default().to_owned()));
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "patient_id": id,
            "bookings": all_bookings,
            "waitlist": waitlist,
            "unavailable_hospitals": unavailable,
        })))
}
