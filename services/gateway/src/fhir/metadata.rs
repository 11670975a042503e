//! `GET /fhir/metadata`: the city's CapabilityStatement, public as FHIR
//! clients expect (they read it before anything else), describing what
//! the gateway serves: the hospitals' read models routed by id, the
//! booking operations and the city bulk feed.

use std::sync::OnceLock;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::fhir::FHIR_JSON;
use crate::state::GatewayState;

/// When this process first described itself: a stable `date` per replica.
fn started() -> DateTime<Utc> {
    static AT: OnceLock<DateTime<Utc>> = OnceLock::new();
    *AT.get_or_init(Utc::now)
}

pub fn capability_statement(base: &str) -> Value {
    let search =
        |name: &str, kind: &str, doc: &str| json!({ "name": name, "type": kind, "documentation": doc });
    let operation = |name: &str| json!({ "name": name, "definition": format!("https://jyt.example/fhir/OperationDefinition/{name}") });
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": started().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "publisher": "京医通 jyt",
        "kind": "instance",
        "software": { "name": "jyt city gateway" },
        "implementation": {
            "description": "Every member hospital's appointments through the city gateway (FHIR R4)",
            "url": format!("{base}/fhir"),
        },
        // R4, spelled as the HL7 R4 JSON schema's enum has it (4.0.1 only
        // corrected 4.0.0), like the hospitals' own statements.
        "fhirVersion": "4.0.0",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Channel apps sign every request (X-App-Id, X-Timestamp, X-Nonce, X-Signature: see /openapi.json); \
                $bulk-publish, bulk files and this statement are public. Ids carry their hospital (`<hospital>-<uuid>`). \
                Errors are OperationOutcomes whose issue[0].details.coding (system urn:jyt:error-code) is the stable machine code.",
            "security": { "description": "HMAC-SHA256 signed requests per channel app; hospital keys on /federation/v1/fhir" },
            "resource": [
                {
                    "type": "Schedule",
                    "interaction": [{ "code": "read" }, { "code": "search-type" }],
                    "searchParam": [
                        search("actor", "reference", "required: Location/<hospital> or Practitioner/<id> (routes the search)"),
                        search("_id", "token", "Schedule ids, comma separated"),
                        search("specialty", "token", "department code (urn:jyt:department)"),
                        search("date", "date", "start of the session; eq, ge, gt, le, lt"),
                        search("_count", "number", "page size"),
                        search("_page", "number", "1-based page"),
                    ],
                },
                {
                    "type": "Slot",
                    "interaction": [{ "code": "read" }, { "code": "search-type" }],
                    "searchParam": [
                        search("schedule", "reference", "required: Schedule/<id> (routes the search)"),
                        search("status", "token", "free, busy, busy-tentative, busy-unavailable"),
                        search("start", "date", "eq, ge, gt, le, lt; may repeat"),
                        search("_count", "number", "page size"),
                        search("_page", "number", "1-based page"),
                    ],
                },
                {
                    "type": "Appointment",
                    "interaction": [{ "code": "read" }],
                    "operation": [operation("find"), operation("hold"), operation("book")],
                },
                {
                    "type": "Patient",
                    "interaction": [{ "code": "read" }, { "code": "create" }],
                    "documentation": "create: real-name registration (identifier urn:jyt:resident-id, GB 11643); read: the enrolling app, or with the patient's card",
                },
                {
                    "type": "RelatedPerson",
                    "interaction": [{ "code": "search-type" }],
                    "searchParam": [search("patient", "reference", "required: Patient/<person id>; live family bindings")],
                },
            ],
            "operation": [operation("bulk-publish")],
        }],
    })
}

#[utoipa::path(
    get, path = "/fhir/metadata", tag = "fhir",
    responses(
        (status = 200, description = "The city's CapabilityStatement; public, no signature", body = serde_json::Value, content_type = "application/fhir+json"),
    )
)]
#[get("/fhir/metadata")]
pub async fn metadata(state: web::Data<GatewayState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(capability_statement(&state.settings.fhir.public_base_url).to_string())
}
