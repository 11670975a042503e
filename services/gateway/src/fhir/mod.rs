//! FHIR R4 through the gateway, for FHIR-speaking channels, member
//! hospitals and aggregators. Each hospital's slot-inventory speaks FHIR
//! itself (Schedule, Slot, Appointment, the SMART Scheduling Links bulk
//! feed); the gateway adds what only the city can: routing by the
//! hospital in every id, the channel rules on every booking, a search
//! across hospitals and one city-wide bulk manifest.
//!
//! # Layout
//! - [`read`]: signed channel reads (`Slot`, `Schedule`, `Appointment`).
//! - [`operations`]: `Appointment/$find` (every hospital at once),
//!   `$hold` (the `/v1/bookings` pipeline) and `$book` (the payments one).
//! - [`bulk`]: the public city manifest `$bulk-publish` and its files.
//! - [`federation`]: a hospital's key reads its own FHIR data.
//! - [`metadata`]: the city's public CapabilityStatement.
//! - [`patient`]: `Patient` (registration, read) and `RelatedPerson`
//!   (family bindings), under the `/v1/patients` rules.
//! - this file: OperationOutcome rendering of every error on a FHIR path,
//!   and reading `Parameters`.

pub mod bulk;
pub mod federation;
pub mod metadata;
pub mod operations;
pub mod patient;
pub mod read;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use jyt_domain::{HospitalId, SlotRef};
use jyt_web::RequestError;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::GatewayError;

pub const FHIR_JSON: &str = "application/fhir+json";
pub const FHIR_NDJSON: &str = "application/fhir+ndjson";
/// The coding system of our stable machine codes in an OperationOutcome.
pub const ERROR_CODE_SYSTEM: &str = "urn:jyt:error-code";
/// Which channel a `$hold` came through, for the hospital's pools.
pub const CHANNEL_HEADER: &str = "Jyt-Channel";
pub const CARD_NUMBER_SYSTEM: &str = "urn:jyt:card-number";
pub const ECARD_TOKEN_SYSTEM: &str = "urn:jyt:ecard-token";

/// Whether a path is served as FHIR (errors as OperationOutcome).
pub fn is_fhir_path(path: &str) -> bool {
    path.starts_with("/fhir/") || path.starts_with("/federation/v1/fhir/")
}

/// The OperationOutcome issue type for an HTTP status.
fn issue_type(status: StatusCode, code: &str) -> &'static str {
    match status.as_u16() {
        400 if code == "MISSING_HEADER" => "required",
        400 => "invalid",
        401 => "security",
        403 => "forbidden",
        404 => "not-found",
        409 => "conflict",
        413 => "too-costly",
        415 => "not-supported",
        422 => "business-rule",
        429 => "throttled",
        503 => "transient",
        _ => "exception",
    }
}

/// One OperationOutcome issue carrying our machine code.
pub fn issue(severity: &str, status: StatusCode, code: &str, text: &str, diagnostics: Option<&str>) -> Value {
    let mut issue = json!({
        "severity": severity,
        "code": issue_type(status, code),
        "details": {
            "coding": [{ "system": ERROR_CODE_SYSTEM, "code": code }],
            "text": text,
        },
    });
    if let Some(d) = diagnostics {
        issue["diagnostics"] = json!(d);
    }
    issue
}

/// The OperationOutcome for a problem+json body: the same code, title,
/// detail and field, and the problem's extra members (`barred_until`,
/// `release_at`, ...) as issue extensions, so nothing a client switches on
/// is lost in translation.
pub fn outcome_from_problem(status: StatusCode, problem: &Value) -> Value {
    let code = problem["code"].as_str().unwrap_or("INTERNAL_ERROR");
    let title = problem["title"]
        .as_str()
        .or_else(|| status.canonical_reason())
        .unwrap_or("Error");
    let mut issue = issue("error", status, code, title, problem["detail"].as_str());
    if let Some(field) = problem["field"].as_str() {
        issue["expression"] = json!([field]);
    }
    let extensions: Vec<Value> = problem
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !["type", "title", "status", "code", "detail", "field"].contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let url = format!("urn:jyt:problem:{k}");
            match v {
                Value::String(s) => Some(json!({ "url": url, "valueString": s })),
                Value::Bool(b) => Some(json!({ "url": url, "valueBoolean": b })),
                Value::Number(n) if n.is_i64() => Some(json!({ "url": url, "valueInteger": n })),
                Value::Number(n) => Some(json!({ "url": url, "valueDecimal": n })),
                _ => None,
            }
        })
        .collect();
    if !extensions.is_empty() {
        issue["extension"] = Value::Array(extensions);
    }
    json!({ "resourceType": "OperationOutcome", "issue": [issue] })
}

/// A problem+json answer as an OperationOutcome with the same status and
/// headers; anything else unchanged.
fn as_outcome(res: actix_web::HttpResponse) -> actix_web::HttpResponse {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(jyt_web::problem::CONTENT_TYPE));
    if !is_problem {
        return res;
    }
    let status = res.status();
    let (head, body) = res.into_parts();
    // Problem bodies are built in memory; one that is not is passed on.
    let bytes = match body.try_into_bytes() {
        Ok(b) => b,
        Err(body) => return head.set_body(body),
    };
    let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let outcome = outcome_from_problem(status, &problem);
    let mut res = head.set_body(BoxBody::new(outcome.to_string()));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    res
}

/// A middleware's refusal (authentication's) on a FHIR path, rendered as
/// an OperationOutcome.
#[derive(Debug)]
struct FhirRefusal(actix_web::Error);

impl std::fmt::Display for FhirRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl actix_web::ResponseError for FhirRefusal {
    fn status_code(&self) -> StatusCode {
        self.0.as_response_error().status_code()
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        as_outcome(self.0.error_response())
    }
}

/// Middleware: on FHIR paths every problem+json answer (the gateway's own
/// errors, signature failures included, and a hospital's JSON API answers
/// relayed by `$book`) leaves as an OperationOutcome with the same status
/// and headers; everywhere else problem+json stays.
pub async fn outcomes(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !is_fhir_path(req.path()) {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    match next.call(req).await {
        Ok(res) => {
            let (http, res) = res.map_into_boxed_body().into_parts();
            Ok(ServiceResponse::new(http, as_outcome(res)))
        }
        Err(e) => Err(FhirRefusal(e).into()),
    }
}

/// What the gateway asks a hospital's `$hold` for: the identity it
/// established, never the card the channel named.
pub fn hold_parameters(slot: &SlotRef, patient: Uuid, referral: Option<&str>) -> Value {
    let mut parameter = vec![
        json!({ "name": "slot", "valueReference": { "reference": format!("Slot/{slot}") } }),
        json!({ "name": "patient", "valueReference": { "reference": format!("Patient/{patient}") } }),
    ];
    if let Some(r) = referral {
        parameter.push(json!({ "name": "referral", "valueString": r }));
    }
    json!({ "resourceType": "Parameters", "parameter": parameter })
}

/// A FHIR `Parameters` resource, read by parameter name; errors name the
/// parameter.
pub struct Parameters(Vec<Value>);

impl Parameters {
    pub fn parse(body: &Value) -> Result<Self, GatewayError> {
        if body["resourceType"] != "Parameters" {
            return Err(RequestError::invalid("resourceType", "must be `Parameters`").into());
        }
        match &body["parameter"] {
            Value::Null => Ok(Self(Vec::new())),
            Value::Array(p) if p.iter().all(|p| p["name"].is_string()) => Ok(Self(p.clone())),
            _ => Err(RequestError::invalid("parameter", "must be a list of named parameters").into()),
        }
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.0.iter().filter(move |p| p["name"] == name)
    }

    /// The parameter, if given once; given twice is refused.
    pub fn one(&self, name: &str) -> Result<Option<&Value>, GatewayError> {
        let mut all = self.0.iter().filter(|p| p["name"] == name);
        let first = all.next();
        if all.next().is_some() {
            return Err(RequestError::invalid(name, "must be given at most once").into());
        }
        Ok(first)
    }

    pub fn required(&self, name: &str, what: &str) -> Result<&Value, GatewayError> {
        self.one(name)?
            .ok_or_else(|| RequestError::invalid(name, format!("required: {what}")).into())
    }

    /// The id in a `valueReference` to `<kind>/<id>`.
    pub fn reference_id<'a>(param: &'a Value, name: &str, kind: &str) -> Result<&'a str, GatewayError> {
        param["valueReference"]["reference"]
            .as_str()
            .and_then(|r| r.strip_prefix(kind))
            .and_then(|r| r.strip_prefix('/'))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                RequestError::invalid(name, format!("must be a valueReference to `{kind}/<id>`")).into()
            })
    }

    /// A `valueString` or `valueCode`.
    pub fn text<'a>(param: &'a Value, name: &str) -> Result<&'a str, GatewayError> {
        param["valueString"]
            .as_str()
            .or_else(|| param["valueCode"].as_str())
            .ok_or_else(|| RequestError::invalid(name, "must be a valueString or valueCode").into())
    }
}

/// The hospital of a `<hospital>-<uuid>` id (Slot, Schedule, Appointment).
pub fn hospital_of(field: &str, id: &str) -> Result<HospitalId, GatewayError> {
    id.parse::<SlotRef>()
        .map(|r| r.hospital)
        .map_err(|e| RequestError::invalid(field, e.to_string()).into())
}

/// Headers telling a hospital the public address its FHIR answers are
/// read at (`X-Forwarded-Host`, `X-Forwarded-Proto`), so the `fullUrl`s,
/// links and `Location` it writes point at the gateway, not at its own
/// internal address. Only for a base without a path: a host cannot carry
/// one.
pub fn public_headers(settings: &crate::settings::FhirSettings) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let Ok(url) = reqwest::Url::parse(&settings.public_base_url) else {
        return headers;
    };
    if url.path() != "/" {
        return headers;
    }
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return headers,
    };
    if let (Ok(host), Ok(proto)) = (
        reqwest::header::HeaderValue::from_str(&host),
        reqwest::header::HeaderValue::from_str(url.scheme()),
    ) {
        headers.insert("x-forwarded-host", host);
        headers.insert("x-forwarded-proto", proto);
    }
    headers
}

/// Parse a query string into its pairs, in order.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, GatewayError> {
    actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
        .map(actix_web::web::Query::into_inner)
        .map_err(|e| RequestError::invalid("query", e.to_string()).into())
}

/// The FHIR reads anyone may make: the capability statement and the SMART
/// Scheduling Links bulk feed (rate limited per address in [`bulk`]).
pub fn configure_public(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(metadata::metadata)
        .service(bulk::manifest)
        .service(bulk::file);
}

/// Inside the signed `/fhir` scope: channels' reads and operations.
pub fn configure_signed(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(read::search_slots)
        .service(read::search_schedules)
        .service(read::read_slot)
        .service(read::read_schedule)
        .service(read::read_appointment)
        .service(operations::find)
        .service(operations::hold)
        .service(operations::book)
        .service(patient::create_patient)
        .service(patient::read_patient)
        .service(patient::search_related);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_becomes_an_outcome_keeping_code_field_and_extra_members() {
        let problem = json!({
            "type": "urn:jyt:problem:patient-barred", "title": "Patient barred", "status": 403,
            "code": "PATIENT_BARRED", "detail": "barred until then", "field": "patient",
            "barred_until": "2027-01-01T00:00:00+00:00", "limit": 4,
        });
        let o = outcome_from_problem(StatusCode::FORBIDDEN, &problem);
        let issue = &o["issue"][0];
        assert_eq!(o["resourceType"], "OperationOutcome");
        assert_eq!(issue["code"], "forbidden");
        assert_eq!(issue["details"]["coding"][0]["system"], ERROR_CODE_SYSTEM);
        assert_eq!(issue["details"]["coding"][0]["code"], "PATIENT_BARRED");
        assert_eq!(issue["diagnostics"], "barred until then");
        assert_eq!(issue["expression"][0], "patient");
        let ext = issue["extension"].as_array().unwrap();
        assert!(ext.contains(
            &json!({ "url": "urn:jyt:problem:barred_until", "valueString": "2027-01-01T00:00:00+00:00" })
        ));
        assert!(ext.contains(&json!({ "url": "urn:jyt:problem:limit", "valueInteger": 4 })));
    }

    #[test]
    fn public_headers_carry_a_host_only_base_and_nothing_for_a_base_with_a_path() {
        let settings = |url: &str| crate::settings::FhirSettings {
            public_base_url: url.to_owned(),
            manifest_cache_seconds: 10,
        };
        let h = public_headers(&settings("https://fhir.city.example:8443"));
        assert_eq!(h["x-forwarded-host"], "fhir.city.example:8443");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(public_headers(&settings("https://city.example/jyt")).is_empty());
    }

    #[test]
    fn parameters_are_read_by_name_and_refused_naming_the_parameter() {
        let body = json!({ "resourceType": "Parameters", "parameter": [
            { "name": "slot", "valueReference": { "reference": "Slot/pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b" } },
            { "name": "referral", "valueString": "r-1" },
            { "name": "referral", "valueString": "r-2" },
        ]});
        let p = Parameters::parse(&body).unwrap();
        let slot = p.required("slot", "x").unwrap();
        assert_eq!(
            Parameters::reference_id(slot, "slot", "Slot").unwrap(),
            "pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
        );
        let field = |e: GatewayError| match e {
            GatewayError::Request(RequestError::InvalidField { field, .. }) => field,
            other => panic!("{other}"),
        };
        assert_eq!(field(p.one("referral").unwrap_err()), "referral");
        assert_eq!(field(p.required("patient", "x").unwrap_err()), "patient");
        assert_eq!(
            field(Parameters::reference_id(slot, "slot", "Patient").unwrap_err()),
            "slot"
        );
        assert_eq!(
            field(
                Parameters::parse(&json!({ "resourceType": "Patient" }))
                    .err()
                    .unwrap()
            ),
            "resourceType"
        );
    }
}
