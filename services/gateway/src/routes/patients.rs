//! Patient services through a patient's channel (signed like every `/v1`
//! call; card-issuing answers only the gateway, so these are the only way
//! in for a channel): real-name registration, the person's cards, online
//! e-card application (a card without visiting a window), loss and
//! replacement, and the card's balance and ledger.
//!
//! Whose patient it is ([`authorize`]): the channel app that registered
//! the person (card-issuing records it as `enrolled_by_app`) acts for them;
//! any other app only with the patient's own proof in a header, never the
//! query string: `X-Patient-Ecard-Token` (a short-lived QR from the
//! patient's device), or for reads `X-Patient-Card` too (the card number,
//! as for waitlist places), or a card read at a kiosk or window. A holder's
//! proof also reads a bound family member's data. Anything else, and an
//! unknown person, is `403 NOT_YOUR_PATIENT` (never told apart).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::Utc;
use jyt_web::{IdempotencyKeyHeader, Json, RequestError};
use reqwest::Method;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::booking::{as_card_header, patient_card_headers};
use crate::error::GatewayError;
use crate::routes::cards::at_a_desk;
use crate::state::{Caller, GatewayState};

/// What a request may do for a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read their data: the enrolling app, or any proof of the patient
    /// (or of a holder they are bound to).
    Read,
    /// Act for them (apply for or replace a card, report one lost, bind a
    /// family member, appeal): the enrolling app, the patient's own e-card
    /// token, or their card read at a kiosk or window.
    Act,
}

/// The person as card-issuing shows them (identifiers masked).
#[derive(Debug, Clone, Deserialize)]
pub struct PersonSummary {
    pub person_id: Uuid,
    #[serde(default)]
    pub enrolled_by_app: Option<String>,
}

/// A path segment that must be a UUID, refused naming `field`.
pub fn uuid_param(raw: &str, field: &str) -> Result<Uuid, GatewayError> {
    Uuid::parse_str(raw).map_err(|_| RequestError::invalid(field, "must be a UUID").into())
}

/// card-issuing's answer as JSON, when it is a success.
pub fn json_of(answer: &crate::upstream::Forwarded) -> Result<serde_json::Value, GatewayError> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        GatewayError::IdentityUnavailable(format!("card-issuing answered something not JSON: {e}"))
    })
}

/// The person, or `None` when card-issuing knows no such person.
pub async fn person(
    state: &GatewayState,
    id: Uuid,
) -> Result<Option<(PersonSummary, serde_json::Value)>, GatewayError> {
    let answer = state
        .patients
        .call(Method::GET, &format!("/v1/persons/{id}"), None, None)
        .await?;
    if answer.status.as_u16() == 404 {
        return Ok(None);
    }
    if !answer.status.is_success() {
        return Err(GatewayError::IdentityUnavailable(format!(
            "person view answered {}",
            answer.status
        )));
    }
    let json = json_of(&answer)?;
    let summary: PersonSummary = serde_json::from_value(json.clone())
        .map_err(|e| GatewayError::IdentityUnavailable(format!("person view: {e}")))?;
    Ok(Some((summary, json)))
}

/// May this request do `access` for `person_id`? Answers the person's
/// masked view when it may (see the module's doc for the rule).
pub async fn authorize(
    state: &GatewayState,
    caller: &Caller,
    req: &HttpRequest,
    person_id: Uuid,
    access: Access,
) -> Result<serde_json::Value, GatewayError> {
    // A card given is checked whoever calls: bad input is refused as such.
    let card = patient_card_headers(req)?;
    let presented = match card {
        Some(c) => Some((
            state
                .patients
                .resolve(c, Utc::now())
                .await
                .map_err(as_card_header)?,
            c.ecard_token.is_some(),
        )),
        None => None,
    };
    let Some((summary, view)) = person(state, person_id).await? else {
        return Err(GatewayError::NotYourPatient);
    };
    if summary.enrolled_by_app.as_deref() == Some(caller.app_id.as_str()) {
        return Ok(view);
    }
    let Some((holder, by_token)) = presented else {
        return Err(GatewayError::NotYourPatient);
    };
    let proof_enough = match access {
        Access::Read => true,
        Access::Act => by_token || at_a_desk(caller),
    };
    if !proof_enough {
        return Err(GatewayError::NotYourPatient);
    }
    if holder == person_id
        || (access == Access::Read && state.patients.is_family_member(holder, person_id).await?)
    {
        return Ok(view);
    }
    Err(GatewayError::NotYourPatient)
}

/// The card, if it is this person's; else `NOT_YOUR_PATIENT`, as for a
/// card that does not exist.
async fn own_card(state: &GatewayState, person_id: Uuid, card_id: Uuid) -> Result<(), GatewayError> {
    let answer = state
        .patients
        .call(Method::GET, &format!("/v1/cards/{card_id}"), None, None)
        .await?;
    if !answer.status.is_success() {
        return Err(GatewayError::NotYourPatient);
    }
    let card = json_of(&answer)?;
    if card["person_id"].as_str() == Some(person_id.to_string().as_str()) {
        Ok(())
    } else {
        Err(GatewayError::NotYourPatient)
    }
}

/// Real-name registration data.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    /// 1 to 64 characters, as on the resident identity card.
    pub name: String,
    /// 18-character resident ID number (GB 11643: the birth date and the
    /// check digit are verified; a 15-digit legacy number is converted).
    pub id_number: String,
    /// 11-digit mainland mobile number.
    pub phone: String,
    #[serde(default)]
    pub insurance_number: Option<String>,
}

/// Without the identifiers, so a logged request shows none.
impl std::fmt::Debug for RegistrationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationRequest").finish_non_exhaustive()
    }
}

impl RegistrationRequest {
    fn upstream(&self, app_id: &str) -> serde_json::Value {
        let mut body = serde_json::json!({
            "name": self.name,
            "id_number": self.id_number,
            "phone": self.phone,
            "enrolled_by_app": app_id,
        });
        if let Some(i) = &self.insurance_number {
            body["insurance_number"] = serde_json::json!(i);
        }
        body
    }
}

#[utoipa::path(
    post,
    path = "/v1/patients",
    tag = "patients",
    request_body = RegistrationRequest,
    responses(
        (status = 201, description = "Registered, enrolled by the calling app (`enrolled_by_app`): identifiers masked; Location /v1/patients/{person_id}", body = serde_json::Value),
        (status = 200, description = "This ID number was registered before (same name): the existing person; the app enrols nobody", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD (name, phone, insurance_number), ID_NUMBER_MALFORMED, ID_NUMBER_BAD_BIRTH_DATE, ID_NUMBER_BAD_CHECK_DIGIT (field id_number)", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 409, description = "IDENTITY_CONFLICT: the ID number is registered under another name", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/patients")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn register(
    caller: Caller,
    state: web::Data<GatewayState>,
    body: Json<RegistrationRequest>,
) -> Result<HttpResponse, GatewayError> {
    let answer = state
        .patients
        .call(
            Method::POST,
            "/v1/persons",
            Some(&body.0.upstream(&caller.app_id)),
            None,
        )
        .await?;
    if !answer.status.is_success() {
        return Ok(answer.into_response());
    }
    let person = json_of(&answer)?;
    let id = person["person_id"].as_str().unwrap_or_default().to_owned();
    Ok(HttpResponse::build(answer.status)
        .insert_header(("Location", format!("/v1/patients/{id}")))
        .json(person))
}

#[utoipa::path(
    get,
    path = "/v1/patients/{person_id}",
    tag = "patients",
    params(
        ("person_id" = Uuid, Path, description = "As registration answered it"),
        ("X-Patient-Card" = Option<String>, Header, description = "From an app that did not enrol the patient: their platform card number, as their consent"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "Or their e-card QR token (at most one of the two)"),
    ),
    responses(
        (status = 200, description = "The person, identifiers masked", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD (person_id, or naming the header of a malformed card), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT (or no such person), CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/patients/{person_id}")]
pub async fn get(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "person_id")?;
    let view = authorize(&state, &caller, &req, id, Access::Read).await?;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(
    get,
    path = "/v1/patients/{person_id}/cards",
    tag = "patients",
    params(
        ("person_id" = Uuid, Path, description = "The patient"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
    ),
    responses(
        (status = 200, description = "`{cards: [...]}`: every card, newest first, with status and balance", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/patients/{person_id}/cards")]
pub async fn cards(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "person_id")?;
    authorize(&state, &caller, &req, id, Access::Read).await?;
    let answer = state
        .patients
        .call(Method::GET, &format!("/v1/persons/{id}/cards"), None, None)
        .await?;
    Ok(answer.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/patients/{person_id}/ecard",
    tag = "patients",
    params(
        ("person_id" = Uuid, Path, description = "The patient"),
        ("Idempotency-Key" = String, Header, description = "A retry with the same key answers the same card"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "From an app that did not enrol the patient: their own e-card token"),
    ),
    responses(
        (status = 201, description = "The e-card, issued through the calling app's channel (its QR tokens are minted for that channel's apps)", body = serde_json::Value),
        (status = 200, description = "The same Idempotency-Key again: the same card", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, MISSING_HEADER (Idempotency-Key), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 409, description = "CARD_ALREADY_ISSUED: a live e-card exists (report it lost to replace it), IDEMPOTENCY_KEY_REUSED", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/patients/{person_id}/ecard")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn apply_ecard(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    key: IdempotencyKeyHeader,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "person_id")?;
    authorize(&state, &caller, &req, id, Access::Act).await?;
    let body = serde_json::json!({ "kind": "ecard", "channel": caller.channel });
    // Keyed per app, so two apps' keys can never collide.
    let key = format!("{}:{}", caller.app_id, key.0.as_str());
    let answer = state
        .patients
        .call(
            Method::POST,
            &format!("/v1/persons/{id}/cards"),
            Some(&body),
            Some(&key),
        )
        .await?;
    Ok(answer.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/patients/{person_id}/cards/{card_id}/report-loss",
    tag = "patients",
    params(
        ("person_id" = Uuid, Path, description = "The card holder"),
        ("card_id" = Uuid, Path, description = "One of their cards"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "From an app that did not enrol the patient: their own e-card token (or at a kiosk or window, X-Patient-Card)"),
    ),
    responses(
        (status = 200, description = "The card, `lost`: refused everywhere from now on; reporting again answers the same", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT (or not their card), CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 409, description = "CARD_REPLACED, CARD_CANCELLED", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/patients/{person_id}/cards/{card_id}/report-loss")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn report_loss(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let person = uuid_param(&path.0, "person_id")?;
    let card = uuid_param(&path.1, "card_id")?;
    authorize(&state, &caller, &req, person, Access::Act).await?;
    own_card(&state, person, card).await?;
    let answer = state
        .patients
        .call(
            Method::POST,
            &format!("/v1/cards/{card}/report-loss"),
            Some(&serde_json::json!({})),
            None,
        )
        .await?;
    Ok(answer.into_response())
}

/// A replacement: an e-card online; a physical card only where its chip is
/// written (a kiosk or window), with the new chip's serial.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRequest {
    #[serde(default)]
    pub chip_serial: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/patients/{person_id}/cards/{card_id}/replace",
    tag = "patients",
    request_body = ReplaceRequest,
    params(
        ("person_id" = Uuid, Path, description = "The card holder"),
        ("card_id" = Uuid, Path, description = "The card reported lost"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for report-loss"),
    ),
    responses(
        (status = 201, description = "The new card, keeping the balance; replacing again answers it with 200", body = serde_json::Value),
        (status = 200, description = "Replaced before: the same replacement", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD (chip_serial: a physical card is replaced at a kiosk or window)", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_ACTIVE (report it lost first), CARD_CANCELLED", body = crate::openapi::ProblemDoc),
        (status = 409, description = "CHIP_SERIAL_IN_USE", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/patients/{person_id}/cards/{card_id}/replace")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn replace(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Json<ReplaceRequest>,
) -> Result<HttpResponse, GatewayError> {
    let person = uuid_param(&path.0, "person_id")?;
    let card = uuid_param(&path.1, "card_id")?;
    if body.0.chip_serial.is_some() && !at_a_desk(&caller) {
        return Err(RequestError::invalid(
            "chip_serial",
            "a physical card is written and handed over at a kiosk or window",
        )
        .into());
    }
    authorize(&state, &caller, &req, person, Access::Act).await?;
    own_card(&state, person, card).await?;
    let mut upstream = serde_json::json!({ "channel": caller.channel });
    if let Some(chip) = &body.0.chip_serial {
        upstream["chip_serial"] = serde_json::json!(chip);
    }
    let answer = state
        .patients
        .call(
            Method::POST,
            &format!("/v1/cards/{card}/replace"),
            Some(&upstream),
            None,
        )
        .await?;
    Ok(answer.into_response())
}

#[utoipa::path(
    get,
    path = "/v1/patients/{person_id}/cards/{card_id}/ledger",
    tag = "patients",
    params(
        ("person_id" = Uuid, Path, description = "The card holder"),
        ("card_id" = Uuid, Path, description = "One of their cards"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
    ),
    responses(
        (status = 200, description = "`balance_fen` and every entry (top-ups, fees, refunds, transfers), oldest first, in fen", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT (or not their card), CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/patients/{person_id}/cards/{card_id}/ledger")]
pub async fn ledger(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let person = uuid_param(&path.0, "person_id")?;
    let card = uuid_param(&path.1, "card_id")?;
    authorize(&state, &caller, &req, person, Access::Read).await?;
    own_card(&state, person, card).await?;
    let answer = state
        .patients
        .call(Method::GET, &format!("/v1/cards/{card}/ledger"), None, None)
        .await?;
    Ok(answer.into_response())
}
