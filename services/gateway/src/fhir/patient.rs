//! FHIR R4 `Patient` and `RelatedPerson` for channels, over the same patient
//! services and the same "whose patient" rule as `/v1/patients`
//! ([`crate::routes::patients::authorize`]):
//!
//! - `POST /fhir/Patient`: real-name registration from a Patient resource
//!   (`name[0].text`, an `identifier` in [`RESIDENT_ID_SYSTEM`] checked per
//!   GB 11643, a `telecom` phone); 201 the Patient, enrolled by the app.
//! - `GET /fhir/Patient/{person_id}`: the Patient. Only the person id is an
//!   identifier: the ID number and phone stay masked in `/v1` and out of
//!   FHIR (a masked value is no identifier).
//! - `GET /fhir/RelatedPerson?patient=Patient/{person_id}`: a searchset of
//!   the person's live family bindings, each a RelatedPerson: the holder
//!   (identifier [`PERSON_ID_SYSTEM`]) related to the member (`patient`).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use jyt_web::{Json, Problem, RequestError};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::GatewayError;
use crate::fhir::{FHIR_JSON, query_pairs};
use crate::routes::patients::{Access, authorize, json_of, uuid_param};
use crate::state::{Caller, GatewayState};

/// The platform's person id.
pub const PERSON_ID_SYSTEM: &str = "urn:jyt:person-id";
/// A mainland resident identity card number (居民身份证号码, GB 11643).
pub const RESIDENT_ID_SYSTEM: &str = "urn:jyt:resident-id";

fn fhir_ok(status: actix_web::http::StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .body(body.to_string())
}

/// A person view (`/v1/persons/{id}`) as a Patient.
pub fn patient_resource(person: &Value) -> Value {
    let id = person["person_id"].as_str().unwrap_or_default();
    json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [{ "use": "official", "system": PERSON_ID_SYSTEM, "value": id }],
        "active": true,
        "name": [{ "use": "official", "text": person["name"] }],
        "birthDate": person["birth_date"],
    })
}

/// One family binding as a RelatedPerson: the holder, related to the member.
pub fn related_person(binding: &Value) -> Value {
    json!({
        "resourceType": "RelatedPerson",
        "id": binding["binding_id"],
        "identifier": [{ "system": PERSON_ID_SYSTEM, "value": binding["holder_id"] }],
        "active": true,
        "patient": { "reference": format!("Patient/{}", binding["member_id"].as_str().unwrap_or_default()) },
        "relationship": [{ "text": binding["relationship"] }],
    })
}

/// The registration a Patient resource asks for, each part refused naming
/// its FHIR path.
fn registration(p: &Value) -> Result<Value, GatewayError> {
    if p["resourceType"] != "Patient" {
        return Err(RequestError::invalid("resourceType", "must be Patient").into());
    }
    let name = p["name"][0]["text"]
        .as_str()
        .ok_or_else(|| RequestError::invalid("Patient.name[0].text", "required: the real name"))?;
    let id_number = p["identifier"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["system"] == RESIDENT_ID_SYSTEM))
        .and_then(|i| i["value"].as_str())
        .ok_or_else(|| {
            RequestError::invalid(
                "Patient.identifier",
                format!("required: the resident ID number, system {RESIDENT_ID_SYSTEM}"),
            )
        })?;
    let phone = p["telecom"]
        .as_array()
        .and_then(|t| t.iter().find(|c| c["system"] == "phone"))
        .and_then(|c| c["value"].as_str())
        .ok_or_else(|| RequestError::invalid("Patient.telecom", "required: a phone (system phone)"))?;
    Ok(json!({ "name": name, "id_number": id_number, "phone": phone }))
}

/// card-issuing's refusals of a registration, named by FHIR path.
fn fhir_field(field: &str) -> &'static str {
    match field {
        "id_number" => "Patient.identifier",
        "phone" => "Patient.telecom",
        _ => "Patient.name[0].text",
    }
}

#[utoipa::path(
    post, path = "/fhir/Patient", tag = "fhir",
    request_body(content = serde_json::Value, description = "A Patient: name[0].text, identifier (system urn:jyt:resident-id), telecom (system phone)", content_type = "application/fhir+json"),
    responses(
        (status = 201, description = "Registered and enrolled by the calling app: the Patient", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 200, description = "The ID number was registered before (same name): the Patient", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "OperationOutcome: MALFORMED_JSON, INVALID_FIELD, ID_NUMBER_* (expression names the Patient element)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "OperationOutcome: UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 409, description = "OperationOutcome: IDENTITY_CONFLICT", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "OperationOutcome: RATE_LIMITED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "OperationOutcome: IDENTITY_UNAVAILABLE", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[post("/Patient")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn create_patient(
    caller: Caller,
    state: web::Data<GatewayState>,
    body: Json<Value>,
) -> Result<HttpResponse, GatewayError> {
    let mut upstream = registration(&body.0)?;
    upstream["enrolled_by_app"] = json!(caller.app_id);
    let answer = state
        .patients
        .call(Method::POST, "/v1/persons", Some(&upstream), None)
        .await?;
    if answer.status.is_client_error() {
        let problem = json_of(&answer)?;
        if problem["code"] == "IDENTITY_CONFLICT" {
            return Ok(answer.into_response());
        }
        // card-issuing's field, named by its FHIR path; the outcomes
        // middleware turns the problem into an OperationOutcome.
        let field = fhir_field(problem["field"].as_str().unwrap_or_default());
        let p = Problem::new(
            answer.status,
            problem["code"].as_str().unwrap_or("INVALID_FIELD"),
            problem["title"].as_str().unwrap_or("Bad request"),
        )
        .detail(problem["detail"].as_str().unwrap_or("invalid"))
        .field(field);
        return Ok(p.to_response(None));
    }
    let person = json_of(&answer)?;
    Ok(fhir_ok(answer.status, &patient_resource(&person)))
}

#[utoipa::path(
    get, path = "/fhir/Patient/{id}", tag = "fhir",
    params(
        ("id" = String, Path, description = "The person id"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
    ),
    responses(
        (status = 200, description = "The Patient", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "OperationOutcome: INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "OperationOutcome: UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 403, description = "OperationOutcome: NOT_YOUR_PATIENT, CARD_UNUSABLE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "OperationOutcome: CARD_NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "OperationOutcome: RATE_LIMITED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "OperationOutcome: IDENTITY_UNAVAILABLE", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[get("/Patient/{id}")]
pub async fn read_patient(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "id")?;
    let person = authorize(&state, &caller, &req, id, Access::Read).await?;
    Ok(fhir_ok(
        actix_web::http::StatusCode::OK,
        &patient_resource(&person),
    ))
}

#[utoipa::path(
    get, path = "/fhir/RelatedPerson", tag = "fhir",
    params(
        ("patient" = String, Query, description = "Required: `Patient/<person id>`"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
    ),
    responses(
        (status = 200, description = "A searchset Bundle: the person's live family bindings as RelatedPersons", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "OperationOutcome: INVALID_FIELD (patient, an unknown parameter)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "OperationOutcome: UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 403, description = "OperationOutcome: NOT_YOUR_PATIENT, CARD_UNUSABLE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "OperationOutcome: RATE_LIMITED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "OperationOutcome: IDENTITY_UNAVAILABLE", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[get("/RelatedPerson")]
pub async fn search_related(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
) -> Result<HttpResponse, GatewayError> {
    let pairs = query_pairs(req.query_string())?;
    let mut patient = None;
    for (k, v) in &pairs {
        match k.as_str() {
            "patient" => patient = Some(v.clone()),
            other => {
                return Err(
                    RequestError::invalid(other.to_owned(), "not a supported search parameter").into(),
                );
            }
        }
    }
    let raw = patient.ok_or_else(|| RequestError::invalid("patient", "required: Patient/<person id>"))?;
    let id: Uuid = raw
        .strip_prefix("Patient/")
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| RequestError::invalid("patient", "must be Patient/<person id>"))?;
    authorize(&state, &caller, &req, id, Access::Read).await?;
    let answer = state
        .patients
        .call(Method::GET, &format!("/v1/persons/{id}/family"), None, None)
        .await?;
    if !answer.status.is_success() {
        return Err(GatewayError::IdentityUnavailable(format!(
            "family answered {}",
            answer.status
        )));
    }
    let family = json_of(&answer)?;
    let entries: Vec<Value> = ["members", "holders"]
        .iter()
        .flat_map(|k| family[*k].as_array().cloned().unwrap_or_default())
        .map(|b| json!({ "resource": related_person(&b), "search": { "mode": "match" } }))
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    });
    Ok(fhir_ok(actix_web::http::StatusCode::OK, &bundle))
}
