//! FHIR booking operations for channel apps:
//!
//! - `Appointment/$find` asks every hospital (or the `location`s named) at
//!   once, each through its own lane, and merges the proposed
//!   Appointments; a hospital that does not answer is reported in the
//!   Bundle as an `outcome` entry instead of failing the search.
//! - `Appointment/$hold` is `POST /v1/bookings` in FHIR clothes: the same
//!   pipeline ([`crate::booking::book`]), then the hospital's own
//!   `$hold` with the identity the gateway established.
//! - `Appointment/$book` pays a pending Appointment from the platform
//!   card's prepaid balance through the payments pipeline
//!   ([`crate::payment::settle`]); channel-paid methods are
//!   confirmed by the channel's signed payment notification instead.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, post, web};
use futures::future::join_all;
use jyt_domain::{BookingRef, HospitalId, SlotRef};
use jyt_web::{IdempotencyKeyHeader, Json, RequestError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::booking::{BookingAttempt, HospitalApi, book as book_slot};
use crate::error::GatewayError;
use crate::fhir::{CARD_NUMBER_SYSTEM, ECARD_TOKEN_SYSTEM, FHIR_JSON, Parameters, issue, public_headers};
use crate::identity::CardRef;
use crate::payment::{PaymentMethod, PaymentRequest, settle};
use crate::state::{Caller, GatewayState};

fn fhir_ok(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .body(body.to_string())
}

#[utoipa::path(
    post, path = "/fhir/Appointment/$find", tag = "fhir",
    request_body(content = serde_json::Value, content_type = "application/fhir+json",
        description = "Parameters: `start`, `end` (valueDateTime), `specialty`, `practitioner`, and `location` (valueReference `Location/<hospital>`, repeatable) to ask only those hospitals"),
    responses(
        (status = 200, description = "Bundle searchset of proposed Appointments on free Slots, from every hospital asked; a hospital that did not answer is an `outcome` entry (HOSPITAL_UNAVAILABLE)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "INVALID_FIELD, MALFORMED_JSON", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND (a `location` not in the city)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "RATE_LIMITED", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[post("/Appointment/$find")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn find(
    state: web::Data<GatewayState>,
    caller: Caller,
    body: Json<Value>,
) -> Result<HttpResponse, GatewayError> {
    let params = Parameters::parse(&body.0)?;
    let mut hospitals: Vec<HospitalId> = Vec::new();
    for p in params.all("location") {
        let id = Parameters::reference_id(p, "location", "Location")?;
        let h: HospitalId = id
            .parse()
            .map_err(|e: jyt_domain::ParseError| RequestError::invalid("location", e.to_string()))?;
        state.upstreams.route(&h)?;
        if !hospitals.contains(&h) {
            hospitals.push(h);
        }
    }
    if hospitals.is_empty() {
        hospitals = state.upstreams.hospitals().map(|(id, _)| id.clone()).collect();
    }
    hospitals.sort();
    // Each hospital searches only itself: the `location`s are the gateway's.
    let mut forwarded = body.0.clone();
    if let Some(list) = forwarded["parameter"].as_array_mut() {
        list.retain(|p| p["name"] != "location");
    }
    let upstream_body = forwarded.to_string().into_bytes();
    let answers = join_all(hospitals.iter().map(|h| {
        state.upstreams.forward(
            h,
            reqwest::Method::POST,
            "/fhir/Appointment/$find",
            public_headers(&state.settings.fhir),
            Some(upstream_body.clone()),
        )
    }))
    .await;

    let mut entries: Vec<Value> = Vec::new();
    let mut unavailable: Vec<Value> = Vec::new();
    for (hospital, answer) in hospitals.iter().zip(answers) {
        let down = |reason: &str| {
            issue(
                "warning",
                StatusCode::SERVICE_UNAVAILABLE,
                "HOSPITAL_UNAVAILABLE",
                &format!("hospital `{hospital}` did not answer; its slots are not in this result"),
                Some(reason),
            )
        };
        match answer {
            Ok(a) if a.status.is_success() => {
                let bundle: Value = serde_json::from_slice(&a.body).map_err(|e| {
                    GatewayError::Unexpected(anyhow::Error::new(e).context(format!("{hospital}'s $find")))
                })?;
                if let Some(list) = bundle["entry"].as_array() {
                    entries.extend(list.iter().cloned());
                }
            }
            // The same parameters went everywhere: a refusal is the
            // request's fault, and the first hospital's words say why.
            Ok(a) if a.status.is_client_error() => return Ok(a.into_response()),
            Ok(a) => unavailable.push(down(&format!("answered {}", a.status))),
            Err(GatewayError::HospitalUnavailable { reason, .. }) => {
                tracing::warn!(%hospital, %reason, "left out of $find");
                unavailable.push(down("not answering"));
            }
            Err(e) => return Err(e),
        }
    }
    // Soonest first across the city; ties in a stable order.
    entries.sort_by(|a, b| {
        let key = |e: &Value| {
            (
                e["resource"]["start"].as_str().unwrap_or("").to_owned(),
                e["resource"]["id"].as_str().unwrap_or("").to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    let total = entries.len();
    if !unavailable.is_empty() {
        entries.push(json!({
            "resource": { "resourceType": "OperationOutcome", "issue": unavailable },
            "search": { "mode": "outcome" },
        }));
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "entry": entries,
    });
    Ok(fhir_ok(StatusCode::OK, &bundle))
}

/// The card a `patient` parameter names, by its identifier system.
fn card_of(params: &Parameters) -> Result<CardRef<'_>, GatewayError> {
    let p = params.required(
        "patient",
        "a valueIdentifier with system urn:jyt:card-number or urn:jyt:ecard-token",
    )?;
    let identifier = &p["valueIdentifier"];
    let value = identifier["value"].as_str().filter(|v| !v.is_empty());
    match (identifier["system"].as_str(), value) {
        (Some(CARD_NUMBER_SYSTEM), Some(v)) => Ok(CardRef {
            card_number: Some(v),
            ecard_token: None,
        }),
        (Some(ECARD_TOKEN_SYSTEM), Some(v)) => Ok(CardRef {
            card_number: None,
            ecard_token: Some(v),
        }),
        _ => Err(RequestError::invalid(
            "patient",
            "must be a valueIdentifier with system urn:jyt:card-number or urn:jyt:ecard-token and a value",
        )
        .into()),
    }
}

/// Identity errors name the JSON API's fields; here the card is the
/// `patient` parameter.
fn as_patient_parameter(e: GatewayError) -> GatewayError {
    match e {
        GatewayError::Request(RequestError::InvalidField { field, reason })
            if field == "card_number" || field == "ecard_token" =>
        {
            RequestError::invalid("patient", reason).into()
        }
        other => other,
    }
}

#[utoipa::path(
    post, path = "/fhir/Appointment/$hold", tag = "fhir",
    request_body(content = serde_json::Value, content_type = "application/fhir+json",
        description = "Parameters: `slot` (valueReference `Slot/<id>`), `patient` (valueIdentifier, system `urn:jyt:card-number` or `urn:jyt:ecard-token`), optional `subject` (valueReference `Patient/<uuid>`, a bound family member) and `referral` (valueString: the id of a referral issued to the slot's hospital, for the `referral` channel)"),
    params(("Idempotency-Key" = String, Header, description = "Same key, same answer; required")),
    responses(
        (status = 201, description = "Appointment `pending` (held until paid, hold-expiry extension) or `booked` (free of charge)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "INVALID_FIELD (naming the parameter), MALFORMED_JSON, MISSING_HEADER (Idempotency-Key), ECARD_INVALID, ECARD_EXPIRED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 403, description = "PATIENT_BARRED (with barred_until), NOT_FAMILY_MEMBER, CARD_UNUSABLE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND, SLOT_NOT_FOUND, CARD_NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 409, description = "SLOT_SOLD_OUT, NOT_YET_RELEASED, ALREADY_BOOKED, IDEMPOTENCY_KEY_REUSED, DAILY_LIMIT_REACHED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, CACHE_UNAVAILABLE, DATABASE_UNAVAILABLE, with Retry-After", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[post("/Appointment/$hold")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn hold(
    state: web::Data<GatewayState>,
    caller: Caller,
    key: IdempotencyKeyHeader,
    body: Json<Value>,
) -> Result<HttpResponse, GatewayError> {
    let params = Parameters::parse(&body.0)?;
    let slot_param = params.required("slot", "a valueReference to `Slot/<hospital>-<uuid>`")?;
    let slot: SlotRef = Parameters::reference_id(slot_param, "slot", "Slot")?
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("slot", e.to_string()))?;
    let card = card_of(&params)?;
    let subject = match params.one("subject")? {
        Some(p) => Some(
            Uuid::parse_str(Parameters::reference_id(p, "subject", "Patient")?)
                .map_err(|_| RequestError::invalid("subject", "must reference `Patient/<uuid>`"))?,
        ),
        None => None,
    };
    let referral = params
        .one("referral")?
        .map(|p| Parameters::text(p, "referral"))
        .transpose()?;
    let attempt = BookingAttempt {
        slot: &slot,
        card,
        patient_id: subject,
        referral,
        key: &key.0,
    };
    let answer = book_slot(&state, &caller, &attempt, HospitalApi::Fhir)
        .await
        .map_err(as_patient_parameter)?;
    Ok(answer.into_response())
}

#[utoipa::path(
    post, path = "/fhir/Appointment/$book", tag = "fhir",
    request_body(content = serde_json::Value, content_type = "application/fhir+json",
        description = "Parameters: `appointment` (valueReference `Appointment/<id>`, a pending Appointment of this app's, i.e. its `owner_app`), `payment-method` (valueCode `prepaid-card`) and `patient` (valueIdentifier: the card to debit, the patient's or their family account holder's; from an app other than the booking's own it must be the patient's own card, their consent)"),
    responses(
        (status = 200, description = "Appointment `booked`: the fee was debited from the card's prepaid balance and the hospital confirmed", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 400, description = "INVALID_FIELD (naming the parameter), MALFORMED_JSON, ECARD_INVALID, ECARD_EXPIRED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 403, description = "NOT_YOUR_BOOKING (another app's booking, and not the patient's own card), NOT_FAMILY_MEMBER, CARD_UNUSABLE", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 404, description = "HOSPITAL_NOT_FOUND, BOOKING_NOT_FOUND, CARD_NOT_FOUND", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 409, description = "HOLD_EXPIRED (refunded to the card), INSUFFICIENT_BALANCE, PAYMENT_IN_PROGRESS, ALREADY_CONFIRMED, PAYMENT_REFERENCE_USED, BOOKING_NOT_HELD", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 422, description = "PAYMENT_CALLBACK_REQUIRED: self-pay and insurance are confirmed by the channel's signed payment notification (`POST /v1/bookings/{id}/payments`)", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 429, description = "RATE_LIMITED", body = serde_json::Value, content_type = "application/fhir+json"),
        (status = 503, description = "HOSPITAL_UNAVAILABLE, IDENTITY_UNAVAILABLE, CACHE_UNAVAILABLE; retry the same request", body = serde_json::Value, content_type = "application/fhir+json"),
    ),
    security(("signed_request" = []))
)]
#[post("/Appointment/$book")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn book(
    state: web::Data<GatewayState>,
    caller: Caller,
    body: Json<Value>,
) -> Result<HttpResponse, GatewayError> {
    let params = Parameters::parse(&body.0)?;
    let appointment = params.required("appointment", "a valueReference to `Appointment/<id>`")?;
    let booking: BookingRef = Parameters::reference_id(appointment, "appointment", "Appointment")?
        .parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("appointment", e.to_string()))?;
    let method = Parameters::text(
        params.required("payment-method", "prepaid-card")?,
        "payment-method",
    )?;
    match method {
        "prepaid-card" => {}
        "self-pay" | "insurance" => return Err(GatewayError::PaymentCallbackRequired),
        _ => {
            return Err(RequestError::invalid(
                "payment-method",
                "must be prepaid-card (self-pay and insurance are confirmed by the payment notification)",
            )
            .into());
        }
    }
    let card = card_of(&params)?;
    let payment = PaymentRequest {
        payment_method: PaymentMethod::PrepaidCard,
        payment_reference: None,
        amount_fen: None,
        card_number: card.card_number.map(str::to_owned),
        ecard_token: card.ecard_token.map(str::to_owned),
    };
    let settled = settle(&state, &caller, &booking, &payment)
        .await
        .map_err(as_patient_parameter)?;
    if !settled.status().is_success() {
        // The hospital's refusal (problem+json), as an OperationOutcome.
        return Ok(settled.into_response());
    }
    // Paid and confirmed (now or by an earlier delivery of this request):
    // answer the Appointment as the hospital has it now.
    state
        .upstreams
        .call(
            &booking.hospital,
            reqwest::Method::GET,
            &format!("/fhir/Appointment/{booking}"),
            public_headers(&state.settings.fhir),
            None,
        )
        .await
}
