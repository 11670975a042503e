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
use crate::routes::{availability, bookings, cards, hospitals, patient_actions, payments, waitlist};

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
        waitlist::get,
        crate::routes::precise::profile,
        crate::routes::precise::submit,
        crate::routes::precise::get,
        crate::routes::draws::entry,
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
        crate::routes::federation::publish,
        crate::routes::federation::set_capacity,
        crate::routes::federation::stop,
        crate::routes::federation::visit_step,
        crate::routes::federation::feed,
        crate::routes::federation::satisfaction,
        crate::routes::federation::follow_up,
        crate::routes::federation::put_precise_profile,
        crate::routes::federation::precise_submissions,
        crate::routes::federation::decide_precise_submission,
        crate::routes::draws::federation_record,
        crate::routes::referrals::put_teams,
        crate::routes::referrals::teams,
        crate::routes::referrals::issue,
        crate::notify::list_dead,
        crate::notify::replay_dead,
        crate::routes::ops::dead_letters,
        crate::routes::ops::replay_dead_letter,
        crate::routes::ops::schedules,
        crate::routes::ops::set_capacity,
        crate::routes::ops::policy,
        crate::routes::ops::set_policy,
        crate::routes::ops::draw,
        crate::routes::ops::appeals,
        crate::routes::ops::decide_appeal,
        crate::routes::patients::register,
        crate::routes::patients::get,
        crate::routes::patients::cards,
        crate::routes::patients::apply_ecard,
        crate::routes::patients::report_loss,
        crate::routes::patients::replace,
        crate::routes::patients::ledger,
        crate::routes::family::list,
        crate::routes::family::bind,
        crate::routes::family::confirm,
        crate::routes::family_doctor::sign,
        crate::routes::family_doctor::list,
        crate::routes::family_doctor::end,
        crate::routes::standing::get,
        crate::routes::standing::appeal,
        crate::routes::standing::bookings,
        crate::routes::surveys::get,
        crate::routes::surveys::answer,
        fhir::patient::create_patient,
        fhir::patient::read_patient,
        fhir::patient::search_related,
    ),
    components(schemas(
        ProblemDoc,
        bookings::BookRequest,
        crate::payment::PaymentRequest,
        crate::payment::PaymentMethod,
        patient_actions::PatientRequest,
        patient_actions::CheckInRequest,
        waitlist::WaitlistEntryView,
        crate::routes::precise::SubmissionRequest,
        crate::routes::precise::DocumentRef,
        hospitals::HospitalView,
        hospitals::HospitalList,
        availability::Availability,
        availability::AvailabilityPage,
        availability::ClinicLevel,
        cards::CardRequest,
        cards::TopUpNotification,
        crate::routes::patients::RegistrationRequest,
        crate::routes::patients::ReplaceRequest,
        crate::routes::family::BindRequest,
        crate::routes::family::ConfirmRequest,
        crate::routes::family_doctor::SignRequest,
        crate::routes::referrals::ReferralRequest,
        crate::routes::standing::AppealRequest,
        jyt_domain::survey::Answers,
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
        complete_responses(&mut doc);
        if let Some(components) = doc.get_mut("components") {
            components["securitySchemes"] = serde_json::json!({
                "hospital_key": {
                    "type": "apiKey", "in": "header", "name": "X-Signature",
                    "description": "Signed like a channel request, with the hospital's key id in X-App-Id (federation API)."
                },
                "operator_token": { "type": "http", "scheme": "bearer", "description": "An operator's bearer token (dead letters)." },
                "internal_token": {
                    "type": "apiKey", "in": "header", "name": "X-Internal-Token",
                    "description": "The operators' relay (/ops/v1): an internal token for audience gateway-ops naming the acting console operator, minted by the console's backend."
                },
                "signed_request": {
                    "type": "apiKey", "in": "header", "name": "X-Signature",
                    "description": "With X-App-Id, X-Timestamp and X-Nonce; see the README's \"Signed requests\"."
                }
            });
        }
        doc
    })
}

/// The answers every operation can give whatever its handler does, added
/// where an operation does not list them itself, and the error bodies'
/// true media types. Written once here rather than on every route, so a
/// new route cannot forget one:
/// - problems are `application/problem+json` (FHIR paths: an
///   OperationOutcome as `application/fhir+json`);
/// - 400 (a non-canonical path, a malformed parameter), 404 (an id of no
///   route or record), 429 (rate limits) and 503 (Redis, which keeps
///   nonces and limits, or a hospital unavailable) on every operation;
/// - 401 on every signed operation;
/// - 413 and 415 on every operation with a body.
fn complete_responses(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let fhir = path.starts_with("/fhir") || path.starts_with("/federation/v1/fhir");
        let (media, schema) = if fhir {
            (
                "application/fhir+json",
                serde_json::json!({ "type": "object", "description": "OperationOutcome" }),
            )
        } else {
            (
                "application/problem+json",
                serde_json::json!({ "$ref": "#/components/schemas/ProblemDoc" }),
            )
        };
        let Some(ops) = item.as_object_mut() else { continue };
        for (method, op) in ops.iter_mut() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            describe_id_formats(op);
            let signed = op.get("security").is_some();
            let has_body = op.get("requestBody").is_some();
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            // A problem documented as plain JSON is sent as problem+json.
            for (status, response) in responses.iter_mut() {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                if let Some(content) = response.get_mut("content").and_then(|c| c.as_object_mut())
                    && !fhir
                    && let Some(json) = content.remove("application/json")
                {
                    content.insert("application/problem+json".to_owned(), json);
                }
            }
            let mut generic = vec![
                ("400", "NON_CANONICAL_PATH, INVALID_FIELD"),
                ("404", "NOT_FOUND"),
                ("429", "RATE_LIMITED, with Retry-After"),
                ("503", "CACHE_UNAVAILABLE, HOSPITAL_UNAVAILABLE, with Retry-After"),
            ];
            if signed {
                generic.push((
                    "401",
                    "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE",
                ));
            }
            if has_body {
                generic.push(("413", "BODY_TOO_LARGE"));
                generic.push(("415", "UNSUPPORTED_MEDIA_TYPE"));
            }
            for (status, description) in generic {
                responses.entry(status.to_owned()).or_insert_with(|| {
                    serde_json::json!({
                        "description": description,
                        "content": { media: { "schema": schema.clone() } },
                    })
                });
            }
        }
    }
}

/// A hospital id: 2 to 20 of a-z 0-9 (`jyt_domain::HospitalId`).
const HOSPITAL_ID: &str = "^[a-z0-9]{2,20}$";
/// A booking, slot, schedule or waitlist entry id: `<hospital>-<uuid>`.
const HOSPITAL_SCOPED_ID: &str =
    "^[a-z0-9]{2,20}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// The id formats of path parameters, as `pattern`s a client (and a
/// fuzzer) can read: hospital ids, and ids that carry their hospital.
fn describe_id_formats(op: &mut serde_json::Value) {
    let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
        return;
    };
    for p in params {
        if p["in"] != "path" {
            continue;
        }
        let pattern = match p["name"].as_str().unwrap_or_default() {
            "hospital_id" | "hospital" => HOSPITAL_ID,
            "booking_id" | "slot_id" | "schedule_id" | "entry_id" | "id" => HOSPITAL_SCOPED_ID,
            _ => continue,
        };
        p["schema"] = serde_json::json!({ "type": "string", "pattern": pattern });
    }
}

#[get("/openapi.json")]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(document_json())
}

/// The methods the document lists for the path a request named, upper
/// case, sorted; empty when no documented path matches. `{name}` matches
/// one segment, and a last `{path}` parameter the rest (the federation FHIR
/// pass-through).
pub fn allowed_methods(path: &str) -> Vec<String> {
    let Some(paths) = document_json()["paths"].as_object() else {
        return Vec::new();
    };
    let given: Vec<&str> = path.split('/').collect();
    // The most specific documented paths only: `/fhir/Appointment/$book`
    // is that operation, not `/fhir/Appointment/{id}` with id `$book`.
    let literals = |template: &str| template.split('/').filter(|p| !p.starts_with('{')).count();
    let matching: Vec<(&String, &serde_json::Value)> = paths
        .iter()
        .filter(|(template, _)| template_matches(template, &given))
        .collect();
    let best = matching.iter().map(|(t, _)| literals(t)).max().unwrap_or(0);
    let mut methods: Vec<String> = matching
        .into_iter()
        .filter(|(template, _)| literals(template) == best)
        .flat_map(|(_, item)| item.as_object().into_iter().flat_map(|o| o.keys()))
        .filter(|m| ["get", "put", "post", "delete", "patch", "head", "options"].contains(&m.as_str()))
        .map(|m| m.to_ascii_uppercase())
        .collect();
    methods.sort();
    methods.dedup();
    methods
}

fn template_matches(template: &str, given: &[&str]) -> bool {
    let parts: Vec<&str> = template.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let is_param = part.starts_with('{') && part.ends_with('}');
        if is_param && *part == "{path}" && i == parts.len() - 1 {
            return given.len() > i && given[i..].iter().all(|s| !s.is_empty());
        }
        match given.get(i) {
            Some(seg) if is_param && !seg.is_empty() => {}
            Some(seg) if seg == part => {}
            _ => return false,
        }
    }
    parts.len() == given.len()
}

/// Every request no route took: `405 METHOD_NOT_ALLOWED` with `Allow` when
/// the document lists the path under other methods, else `404 NOT_FOUND`.
pub async fn no_route(req: actix_web::HttpRequest) -> HttpResponse {
    let allowed = allowed_methods(req.path());
    if allowed.is_empty() {
        return jyt_web::problem::not_found(req).await;
    }
    let mut res = jyt_web::Problem::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "Method not allowed",
    )
    .detail(format!(
        "{} {} is not served; allowed: {}",
        req.method(),
        req.path(),
        allowed.join(", ")
    ))
    .to_response(None);
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
        res.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_methods_follow_the_documented_paths() {
        assert_eq!(allowed_methods("/v1/bookings"), vec!["POST"]);
        assert_eq!(
            allowed_methods("/v1/bookings/pumch-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            vec!["GET"]
        );
        assert_eq!(allowed_methods("/federation/v1/fhir/Schedule/x"), vec!["GET"]);
        assert_eq!(allowed_methods("/fhir/Appointment/$book"), vec!["POST"]);
        assert_eq!(allowed_methods("/fhir/Appointment/pumch-1"), vec!["GET"]);
        assert!(allowed_methods("/v1/bookings/x/y/z").is_empty());
        assert!(allowed_methods("/v1/nothing").is_empty());
        assert!(allowed_methods("/v1/bookings/").is_empty());
    }

    #[test]
    fn the_document_lists_every_path_and_every_code() {
        let doc = document_json();
        for path in [
            "/v1/bookings",
            "/v1/bookings/{booking_id}",
            "/v1/bookings/{booking_id}/payments",
            "/v1/hospitals",
            "/v1/hospitals/{hospital_id}/schedules",
            "/v1/waitlist/{entry_id}",
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
