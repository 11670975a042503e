//! The channel API as an OpenAPI 3 document, generated from the handlers'
//! `#[utoipa::path]` attributes and served at `/openapi.json` (unsigned, so
//! channel developers and tools can read it). Every machine code the
//! gateway answers is listed as the enum of a problem's `code`.

use std::sync::OnceLock;

use actix_web::{HttpResponse, get};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::ALL_CODES;
use crate::fhir;
use crate::routes::{availability, bookings, cards, hospitals, patient_actions, payments};

/// An `application/problem+json` body (RFC 9457). Problems may carry more
/// members: `barred_until` (PATIENT_BARRED), `limit` (RATE_LIMITED,
/// DAILY_LIMIT_REACHED), `booking_id` (ALREADY_BOOKED).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDoc {
    /// `urn:jyt:problem:<code in kebab case>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable machine code; one of the enum.
    pub code: String,
    pub detail: Option<String>,
    /// The request field (body path, query parameter or header) at fault.
    pub field: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "JYT city gateway",
        description = "The channel API of the city-wide appointment platform. Every /v1 and /fhir request (but the public /fhir/$bulk-publish feed) is signed; FHIR paths answer errors as OperationOutcome: \
            X-App-Id, X-Timestamp (unix seconds), X-Nonce and X-Signature = hex HMAC-SHA256 over \
            METHOD\\nPATH[?SORTED_QUERY]\\nTIMESTAMP\\nNONCE\\nhex(SHA-256(body))."
    ),
    paths(
        bookings::create,
        bookings::get,
        payments::pay,
        patient_actions::cancel,
        patient_actions::join_waitlist,
        patient_actions::check_in,
        hospitals::list,
        hospitals::schedules,
        availability::search,
        cards::top_up,
        cards::ecard_token,
        cards::cancel,
        fhir::read::search_slots,
        fhir::read::search_schedules,
        fhir::read::read_slot,
        fhir::read::read_schedule,
        fhir::read::read_appointment,
        fhir::operations::find,
        fhir::operations::hold,
        fhir::operations::book,
        fhir::metadata::metadata,
        fhir::bulk::manifest,
        fhir::bulk::file,
        fhir::federation::read,
    ),
    components(schemas(
        ProblemDoc,
        bookings::BookRequest,
        payments::PaymentRequest,
        payments::PaymentMethod,
        patient_actions::PatientRequest,
        patient_actions::CheckInRequest,
        hospitals::HospitalView,
        hospitals::HospitalList,
        availability::Availability,
        availability::AvailabilityPage,
        availability::ClinicLevel,
        cards::CardRequest,
        cards::TopUpNotification,
    ))
)]
pub struct ApiDoc;

/// The document as JSON, with the code enum and the signing scheme added.
pub fn document_json() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        if let Some(code) = doc.pointer_mut("/components/schemas/ProblemDoc/properties/code") {
            code["enum"] = serde_json::json!(ALL_CODES);
        }
        if let Some(components) = doc.get_mut("components") {
            components["securitySchemes"] = serde_json::json!({
                "signed_request": {
                    "type": "apiKey", "in": "header", "name": "X-Signature",
                    "description": "With X-App-Id, X-Timestamp and X-Nonce; see the README's \"Signed requests\"."
                }
            });
        }
        doc
    })
}

#[get("/openapi.json")]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(document_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_path_and_every_code() {
        let doc = document_json();
        for path in [
            "/v1/bookings",
            "/v1/bookings/{booking_id}",
            "/v1/bookings/{booking_id}/payments",
            "/v1/hospitals",
            "/v1/hospitals/{hospital_id}/schedules",
            "/v1/availability",
            "/fhir/Slot",
            "/fhir/Schedule",
            "/fhir/Slot/{id}",
            "/fhir/Schedule/{id}",
            "/fhir/Appointment/{id}",
            "/fhir/Appointment/$find",
            "/fhir/Appointment/$hold",
            "/fhir/Appointment/$book",
            "/fhir/metadata",
            "/fhir/$bulk-publish",
            "/fhir/bulk/{hospital}/{file}",
            "/federation/v1/fhir/{path}",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
        let codes = doc
            .pointer("/components/schemas/ProblemDoc/properties/code/enum")
            .and_then(|v| v.as_array())
            .unwrap();
        for code in [
            "BAD_SIGNATURE",
            "STALE_TIMESTAMP",
            "REPLAYED_NONCE",
            "PATIENT_BARRED",
            "RATE_LIMITED",
            "PAYMENT_CALLBACK_REQUIRED",
        ] {
            assert!(codes.iter().any(|c| c == code), "{code}");
        }
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    }
}
