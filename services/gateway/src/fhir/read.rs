//! Signed channel reads. Every id carries its hospital, so each read goes
//! to exactly one hospital's slot-inventory, through that hospital's lane
//! (timeout, bulkhead, breaker); a search must name what routes it.

use actix_web::{HttpRequest, HttpResponse, get, web};
use jyt_domain::{BookingRef, HospitalId};
use jyt_web::RequestError;

use crate::booking::{as_card_header, ensure_owner, patient_card_headers};
use crate::error::GatewayError;
use crate::fhir::{hospital_of, public_headers, query_pairs};
use crate::state::{Caller, GatewayState};

async fn get_from(
    state: &GatewayState,
    hospital: &HospitalId,
    path: &str,
    query: &str,
) -> Result<HttpResponse, GatewayError> {
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let headers = public_headers(&state.settings.fhir);
    state
        .upstreams
        .call(hospital, reqwest::Method::GET, &target, headers, None)
        .await
}

/// The one hospital a search parameter names (`hospital` maps each
/// value to its hospital); comma-separated values (FHIR's "or") must all
/// be at the same hospital.
fn routed_by(
    pairs: &[(String, String)],
    name: &'static str,
    hospital: impl Fn(&str) -> Result<HospitalId, GatewayError>,
    what: &str,
) -> Result<HospitalId, GatewayError> {
    let mut found: Option<HospitalId> = None;
    for (_, value) in pairs.iter().filter(|(k, _)| k == name) {
        for v in value.split(',') {
            let h = hospital(v)?;
            if found.as_ref().is_some_and(|f| *f != h) {
                return Err(RequestError::invalid(name, "must name one hospital's resources").into());
            }
            found = Some(h);
        }
    }
    found.ok_or_else(|| RequestError::invalid(name, format!("required: {what}")).into())
}

#[utoipa::path(
    get, path = "/fhir/Slot", tag = "fhir",
    params(
        ("schedule" = String, Query, description = "Required: `Schedule/<hospital>-<uuid>` (routes the search)"),
        ("status" = Option<String>, Query, description = "free, busy, busy-unavailable, busy-tentative"),
        ("start" = Option<String>, Query, description = "`ge<instant>` / `lt<instant>`, repeatable"),
        ("_count" = Option<u32>, Query), ("_page" = Option<u32>, Query),
    ),
    responses(
        (status = 200, description = "Bundle searchset of Slots", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "INVALID_FIELD (`schedule` missing or malformed)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "RATE_LIMITED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[get("/Slot")]
pub async fn search_slots(
    _caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
) -> Result<HttpResponse, GatewayError> {
    let pairs = query_pairs(req.query_string())?;
    let hospital = routed_by(
        &pairs,
        "schedule",
        |v| hospital_of("schedule", v.strip_prefix("Schedule/").unwrap_or(v)),
        "the Schedule's id, `<hospital>-<uuid>`",
    )?;
    get_from(&state, &hospital, "/fhir/Slot", req.query_string()).await
}

#[utoipa::path(
    get, path = "/fhir/Schedule", tag = "fhir",
    params(
        ("actor" = String, Query, description = "Required: `Location/<hospital>` or `Practitioner/<hospital>-<uuid>` (routes the search)"),
        ("specialty" = Option<String>, Query), ("date" = Option<String>, Query),
        ("_id" = Option<String>, Query), ("_count" = Option<u32>, Query), ("_page" = Option<u32>, Query),
    ),
    responses(
        (status = 200, description = "Bundle searchset of Schedules", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "INVALID_FIELD (`actor` missing or malformed)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "RATE_LIMITED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[get("/Schedule")]
pub async fn search_schedules(
    _caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
) -> Result<HttpResponse, GatewayError> {
    let pairs = query_pairs(req.query_string())?;
    let hospital = routed_by(
        &pairs,
        "actor",
        |v| match (v.strip_prefix("Location/"), v.strip_prefix("Practitioner/")) {
            (Some(h), _) => h
                .parse::<HospitalId>()
                .map_err(|e| RequestError::invalid("actor", e.to_string()).into()),
            (_, Some(doctor)) => hospital_of("actor", doctor),
            _ => Err(RequestError::invalid(
                "actor",
                "must reference Location/<hospital> or Practitioner/<id>",
            )
            .into()),
        },
        "the hospital, `Location/<hospital>`",
    )?;
    get_from(&state, &hospital, "/fhir/Schedule", req.query_string()).await
}

#[utoipa::path(
    get, path = "/fhir/Slot/{id}", tag = "fhir",
    params(("id" = String, Path, description = "`<hospital>-<segment uuid>`")),
    responses(
        (status = 200, description = "The Slot", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "INVALID_FIELD", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND, SLOT_NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[get("/Slot/{id:[^$/][^/]*}")]
pub async fn read_slot(
    _caller: Caller,
    state: web::Data<GatewayState>,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = hospital_of("id", &path)?;
    get_from(&state, &hospital, &format!("/fhir/Slot/{path}"), "").await
}

#[utoipa::path(
    get, path = "/fhir/Schedule/{id}", tag = "fhir",
    params(("id" = String, Path, description = "`<hospital>-<schedule uuid>`")),
    responses(
        (status = 200, description = "The Schedule", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "INVALID_FIELD", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND, SCHEDULE_NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[get("/Schedule/{id:[^$/][^/]*}")]
pub async fn read_schedule(
    _caller: Caller,
    state: web::Data<GatewayState>,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = hospital_of("id", &path)?;
    get_from(&state, &hospital, &format!("/fhir/Schedule/{path}"), "").await
}

#[utoipa::path(
    get, path = "/fhir/Appointment/{id}", tag = "fhir",
    params(
        ("id" = String, Path, description = "The booking, `<hospital>-<booking uuid>`"),
        ("X-Patient-Card" = Option<String>, Header, description = "From an app other than the booking's own (`owner_app`): the patient's platform card number, as their consent"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "Or the patient's e-card QR token (at most one of the two)"),
    ),
    responses(
        (status = 200, description = "The Appointment", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "INVALID_FIELD (naming the header for a malformed card), ECARD_INVALID, ECARD_EXPIRED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 403, description = "NOT_YOUR_BOOKING: only the app the booking belongs to reads it, or another app with the patient's own card", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND, BOOKING_NOT_FOUND, CARD_NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[get("/Appointment/{id:[^$/][^/]*}")]
pub async fn read_appointment(
    state: web::Data<GatewayState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let booking: BookingRef = path
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("id", e.to_string()))?;
    // The same object-level rule as `GET /v1/bookings/{id}`.
    let card = patient_card_headers(&req)?;
    ensure_owner(&state, &caller, &booking, card)
        .await
        .map_err(as_card_header)?;
    get_from(
        &state,
        &booking.hospital,
        &format!("/fhir/Appointment/{booking}"),
        "",
    )
    .await
}
