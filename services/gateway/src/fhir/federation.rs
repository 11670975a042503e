//! `GET /federation/v1/fhir/...`: a member hospital reads its own FHIR
//! data (read model and bulk feed) through the gateway with its hospital
//! key, as any FHIR client would. Only its own: another hospital's id in
//! the path or in a search parameter answers `403 HOSPITAL_FORBIDDEN`
//! before anything is forwarded.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use jyt_domain::HospitalId;
use jyt_web::RequestError;
use reqwest::header::{HeaderMap, HeaderValue};

use crate::error::GatewayError;
use crate::fhir::{hospital_of, query_pairs};
use crate::state::{GatewayState, HospitalCaller};

/// The hospital an id in `kind`'s id space belongs to.
fn owner_of(kind: &str, field: &str, id: &str) -> Result<HospitalId, GatewayError> {
    match kind {
        "Location" => id
            .parse()
            .map_err(|e: jyt_domain::ParseError| RequestError::invalid(field, e.to_string()).into()),
        _ => hospital_of(field, id),
    }
}

/// Refuse any id of another hospital: in the path (`<Type>/<id>`) and in
/// the search parameters that carry ids (`_id`, `schedule`, `actor`,
/// `slot`).
fn check_own(caller: &HospitalCaller, tail: &str, query: &str) -> Result<(), GatewayError> {
    // Only plain segments: a `..` would climb out of the FHIR API.
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"$._-".contains(&b))
    };
    if !tail.split('/').all(plain) {
        return Err(RequestError::invalid("path", "must be a FHIR path").into());
    }
    let mut segments = tail.split('/');
    let kind = segments.next().unwrap_or("");
    if let Some(id) = segments.next()
        && ["Location", "Schedule", "Slot", "Appointment"].contains(&kind)
        && !id.starts_with('$')
        && owner_of(kind, "id", id)? != caller.hospital
    {
        return Err(GatewayError::HospitalForbidden);
    }
    for (name, value) in query_pairs(query)? {
        let kind_of_value = match name.as_str() {
            "_id" => kind,
            "schedule" => "Schedule",
            "actor" => "Location",
            "slot" => "Slot",
            _ => continue,
        };
        for v in value.split(',') {
            let (kind, id) = v.split_once('/').unwrap_or((kind_of_value, v));
            if !["Location", "Schedule", "Slot", "Appointment"].contains(&kind) {
                continue;
            }
            if owner_of(kind, &name, id)? != caller.hospital {
                return Err(GatewayError::HospitalForbidden);
            }
        }
    }
    Ok(())
}

#[utoipa::path(
    get, path = "/federation/v1/fhir/{path}", tag = "federation",
    params(
        ("path" = String, Path, description = "Any read of the hospital's own FHIR API: `metadata`, `Schedule`, `Schedule/{id}`, `Slot`, `Slot/{id}`, `Appointment/{id}`, `$bulk-publish`, `bulk/{Type}.ndjson`"),
        ("If-None-Match" = Option<String>, Header, description = "Passed to the hospital (bulk files)"),
    ),
    responses(
        (status = 200, description = "The hospital's answer", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 304, description = "Unchanged (bulk)"),
        (status = 400, description = "INVALID_FIELD", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's id", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "SLOT_NOT_FOUND, SCHEDULE_NOT_FOUND, BOOKING_NOT_FOUND, NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[get("/fhir/{tail:.*}")]
pub async fn read(
    state: web::Data<GatewayState>,
    caller: HospitalCaller,
    tail: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, GatewayError> {
    let tail = tail.into_inner();
    check_own(&caller, &tail, req.query_string())?;
    let target = match req.query_string() {
        "" => format!("/fhir/{tail}"),
        q => format!("/fhir/{tail}?{q}"),
    };
    let mut headers = HeaderMap::new();
    if let Some(v) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
    {
        headers.insert(reqwest::header::IF_NONE_MATCH, v);
    }
    state
        .upstreams
        .call(&caller.hospital, reqwest::Method::GET, &target, headers, None)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pumch() -> HospitalCaller {
        HospitalCaller {
            key_id: "pumchk1".to_owned(),
            hospital: "pumch".parse().unwrap(),
        }
    }

    const PUMCH_SLOT: &str = "pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    const BJH_SLOT: &str = "bjh-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn a_hospital_reads_its_own_ids_and_is_forbidden_anyone_elses() {
        let forbidden = |tail: &str, query: &str| {
            matches!(
                check_own(&pumch(), tail, query),
                Err(GatewayError::HospitalForbidden)
            )
        };
        assert!(check_own(&pumch(), &format!("Slot/{PUMCH_SLOT}"), "").is_ok());
        assert!(check_own(&pumch(), "Schedule", "actor=Location/pumch&date=2026-12-01").is_ok());
        assert!(check_own(&pumch(), "bulk/Slot.ndjson", "").is_ok());
        assert!(check_own(&pumch(), "$bulk-publish", "").is_ok());
        assert!(forbidden(&format!("Slot/{BJH_SLOT}"), ""));
        assert!(forbidden(&format!("Appointment/{BJH_SLOT}"), ""));
        assert!(forbidden("Location/bjh", ""));
        assert!(forbidden("Schedule", "actor=Location/bjh"));
        assert!(forbidden(
            "Slot",
            &format!("schedule=Schedule/{PUMCH_SLOT},{BJH_SLOT}")
        ));
        assert!(forbidden("Slot", &format!("_id={BJH_SLOT}")));
    }

    #[test]
    fn a_path_cannot_climb_out_of_the_fhir_api() {
        for tail in ["../v1/feed", "Slot/../../v1/feed", "Slot//x", "Slot/%2e%2e"] {
            assert!(
                matches!(check_own(&pumch(), tail, ""), Err(GatewayError::Request(_))),
                "{tail}"
            );
        }
    }
}
