//! Family binding (就诊人) through the holder's channel, by the Gansu rules
//! card-issuing enforces: at most 5 new bindings per holder per calendar
//! month (Asia/Shanghai), each person bound at most twice a month.
//!
//! - A member under 16 is bound with the reference of the guardian proof
//!   document the channel checked (`guardian_proof_ref`).
//! - A member of 16 or over confirms themself: card-issuing makes a
//!   one-time code (valid 5 minutes, locked after 5 wrong tries), the
//!   gateway sends it in a signed `family.verification_code` notice to the
//!   member's OWN channel app (the app that enrolled them), never to the
//!   holder's, and only that app (or the member's own e-card token) may
//!   enter it: `POST /v1/family-verifications/{id}/confirm`. There is no
//!   free-text reference a holder's app could make up.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use jyt_web::{Json, RequestError};
use reqwest::Method;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::routes::patients::{Access, authorize, json_of, person, uuid_param};
use crate::state::{Caller, GatewayState};

/// The notice a member's app receives with the code.
pub const VERIFICATION_NOTICE: &str = "family.verification_code";

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// The member's person id (registered first, by any channel).
    pub member_id: Uuid,
    /// e.g. `child`, `parent`, `spouse`; 1 to 32 characters.
    pub relationship: String,
    /// Only for a member under 16: the reference of the guardian proof
    /// document (birth certificate, household register) the channel checked.
    #[serde(default)]
    pub guardian_proof_ref: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The 6 digits the member's app received.
    pub code: String,
}

#[utoipa::path(
    get,
    path = "/v1/patients/{person_id}/family",
    tag = "family",
    params(
        ("person_id" = Uuid, Path, description = "The patient"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
    ),
    responses(
        (status = 200, description = "`members` (bound to this holder) and `holders` (this person is bound to), live bindings", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "CARD_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/patients/{person_id}/family")]
pub async fn list(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "person_id")?;
    authorize(&state, &caller, &req, id, Access::Read).await?;
    let answer = state
        .patients
        .call(Method::GET, &format!("/v1/persons/{id}/family"), None, None)
        .await?;
    Ok(answer.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/patients/{person_id}/family",
    tag = "family",
    request_body = BindRequest,
    params(
        ("person_id" = Uuid, Path, description = "The holder"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "From an app that did not enrol the holder: their own e-card token"),
    ),
    responses(
        (status = 201, description = "Under 16 with guardian_proof_ref: bound", body = serde_json::Value),
        (status = 200, description = "Already bound: the live binding", body = serde_json::Value),
        (status = 202, description = "16 or over: a one-time code went to the member's own channel app (`verification_id`, `expires_at`); the binding is made when that app confirms it", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD (member_id, relationship, guardian_proof_ref), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "PERSON_NOT_FOUND (the member)", body = crate::openapi::ProblemDoc),
        (status = 409, description = "FAMILY_HOLDER_MONTHLY_LIMIT (5 new bindings this month), FAMILY_MEMBER_MONTHLY_LIMIT (the member bound twice this month), MEMBER_CHANNEL_UNKNOWN", body = crate::openapi::ProblemDoc),
        (status = 422, description = "GUARDIAN_PROOF_REQUIRED: a member under 16 needs guardian_proof_ref", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, MEMBER_CHANNEL_UNREACHABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/patients/{person_id}/family")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn bind(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<BindRequest>,
) -> Result<HttpResponse, GatewayError> {
    let holder = uuid_param(&path, "person_id")?;
    let b = body.0;
    authorize(&state, &caller, &req, holder, Access::Act).await?;
    if let Some(proof) = &b.guardian_proof_ref {
        let upstream = serde_json::json!({
            "member_id": b.member_id, "relationship": b.relationship, "guardian_proof_ref": proof,
        });
        let answer = state
            .patients
            .call(
                Method::POST,
                &format!("/v1/persons/{holder}/family"),
                Some(&upstream),
                None,
            )
            .await?;
        if answer.status.is_success() {
            state.patients.forget(holder).await;
        } else if answer.status.as_u16() == 422 {
            // card-issuing asks a 16+ member for their own verification:
            // here that is the one-time code, never a reference.
            return Err(RequestError::invalid(
                "guardian_proof_ref",
                "a member aged 16 or over confirms with a one-time code: send no guardian_proof_ref",
            )
            .into());
        }
        return Ok(answer.into_response());
    }
    // card-issuing checks the pair, the member's age (under 16: 422
    // GUARDIAN_PROOF_REQUIRED) and this month's limits before any code.
    let upstream = serde_json::json!({ "member_id": b.member_id, "relationship": b.relationship });
    let answer = state
        .patients
        .call(
            Method::POST,
            &format!("/v1/persons/{holder}/family/verifications"),
            Some(&upstream),
            None,
        )
        .await?;
    if !answer.status.is_success() {
        return Ok(answer.into_response());
    }
    let started = json_of(&answer)?;
    // The member's own app; without one the unsent code just expires.
    let app = person(&state, b.member_id)
        .await?
        .and_then(|(m, _)| m.enrolled_by_app)
        .filter(|a| state.notifier.has_callback(a))
        .ok_or(GatewayError::MemberChannelUnknown)?;
    send_code(&state, &app, holder, &b.relationship, &started).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "verification_id": started["verification_id"],
        "holder_id": holder,
        "member_id": b.member_id,
        "status": "awaiting_member",
        "expires_at": started["expires_at"],
    })))
}

/// The code, to the member's app's callback, signed with that app's secret.
async fn send_code(
    state: &GatewayState,
    app: &str,
    holder: Uuid,
    relationship: &str,
    started: &serde_json::Value,
) -> Result<(), GatewayError> {
    let id = started["verification_id"].as_str().unwrap_or_default();
    let notice = serde_json::json!({
        "notice_id": format!("verification:{id}"),
        "event_type": VERIFICATION_NOTICE,
        "verification_id": id,
        "holder_id": holder,
        "member_id": started["member_id"],
        "relationship": relationship,
        "code": started["code"],
        "expires_at": started["expires_at"],
    });
    state
        .notifier
        .send_now(app, VERIFICATION_NOTICE, &format!("verification:{id}"), &notice)
        .await
        .map_err(GatewayError::MemberChannelUnreachable)
}

#[utoipa::path(
    post,
    path = "/v1/family-verifications/{verification_id}/confirm",
    tag = "family",
    request_body = ConfirmRequest,
    params(
        ("verification_id" = Uuid, Path, description = "From the notice the member's app received"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "From an app other than the member's own: the member's e-card token"),
    ),
    responses(
        (status = 201, description = "The right code in time: bound", body = serde_json::Value),
        (status = 200, description = "Confirmed before: the binding", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD (verification_id, code)", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT: only the member's own app (or the member's e-card token) confirms", body = crate::openapi::ProblemDoc),
        (status = 404, description = "VERIFICATION_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "VERIFICATION_EXPIRED (after 5 minutes), VERIFICATION_LOCKED (5 wrong codes), FAMILY_HOLDER_MONTHLY_LIMIT, FAMILY_MEMBER_MONTHLY_LIMIT", body = crate::openapi::ProblemDoc),
        (status = 422, description = "VERIFICATION_CODE_WRONG, with `attempts_left`", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/family-verifications/{verification_id}/confirm")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn confirm(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<ConfirmRequest>,
) -> Result<HttpResponse, GatewayError> {
    let id = uuid_param(&path, "verification_id")?;
    let found = state
        .patients
        .call(Method::GET, &format!("/v1/family-verifications/{id}"), None, None)
        .await?;
    if !found.status.is_success() {
        return Ok(found.into_response());
    }
    let v = json_of(&found)?;
    let member = v["member_id"]
        .as_str()
        .and_then(|m| m.parse::<Uuid>().ok())
        .ok_or_else(|| GatewayError::IdentityUnavailable("a verification without a member".into()))?;
    authorize(&state, &caller, &req, member, Access::Act).await?;
    let answer = state
        .patients
        .call(
            Method::POST,
            &format!("/v1/family-verifications/{id}/confirm"),
            Some(&serde_json::json!({ "code": body.0.code })),
            None,
        )
        .await?;
    if answer.status.is_success()
        && let Some(holder) = v["holder_id"].as_str().and_then(|h| h.parse().ok())
    {
        state.patients.forget(holder).await;
    }
    Ok(answer.into_response())
}
