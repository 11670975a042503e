//! Family doctor signing (家庭医生签约, the Haizhu 580 model) through the
//! resident's channel app: sign online with a community health centre's
//! team (with the signature trace, 签名认证), read the signing, end it
//! early. card-issuing enforces the rules (one active signing per person,
//! a year's term, the team's capacity); the gateway applies the patient
//! proof rules of every patient service (`patients::authorize`: reading
//! needs the enrolling app or the patient's proof, acting needs the
//! enrolling app, the patient's own e-card token or a desk).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use jyt_web::{Json, RequestError};
use reqwest::Method;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::GatewayError;
use crate::routes::patients::{Access, authorize, uuid_param};
use crate::state::{Caller, GatewayState};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The community health centre (a member hospital's id).
    pub hospital: String,
    /// The centre's id of its family doctor team.
    pub team: String,
    /// The resident's signature trace as the app captured it (16 to 65536
    /// characters, e.g. base64 of the strokes): card-issuing keeps only
    /// its SHA-256.
    pub signature_trace: String,
}

#[utoipa::path(
    post,
    path = "/v1/patients/{person_id}/family-doctor-signings",
    tag = "family-doctor",
    request_body = SignRequest,
    params(
        ("person_id" = Uuid, Path, description = "The resident"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "From an app that did not enrol the resident: their own e-card token"),
    ),
    responses(
        (status = 201, description = "Signed for a year from now", body = serde_json::Value),
        (status = 200, description = "The same active signing, already made", body = serde_json::Value),
        (status = 400, description = "MALFORMED_JSON, INVALID_FIELD (hospital, team, signature_trace), ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 404, description = "TEAM_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "ALREADY_SIGNED (another active signing, `active_until`), TEAM_FULL (`capacity`)", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/patients/{person_id}/family-doctor-signings")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn sign(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<SignRequest>,
) -> Result<HttpResponse, GatewayError> {
    let person = uuid_param(&path, "person_id")?;
    authorize(&state, &caller, &req, person, Access::Act).await?;
    if state.upstreams.route(&parse_hospital(&body.0.hospital)?).is_err() {
        return Err(RequestError::invalid("hospital", "is not a member hospital").into());
    }
    let upstream = serde_json::json!({
        "hospital": body.0.hospital,
        "team": body.0.team,
        "signature_trace": body.0.signature_trace,
        "app": caller.app_id,
    });
    changed(
        &state,
        person,
        &format!("/v1/persons/{person}/family-doctor-signings"),
        &upstream,
    )
    .await
}

fn parse_hospital(raw: &str) -> Result<jyt_domain::HospitalId, GatewayError> {
    raw.parse()
        .map_err(|e: jyt_domain::ParseError| RequestError::invalid("hospital", e.to_string()).into())
}

#[utoipa::path(
    get,
    path = "/v1/patients/{person_id}/family-doctor-signings",
    tag = "family-doctor",
    params(
        ("person_id" = Uuid, Path, description = "The resident"),
        ("X-Patient-Card" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "As for GET /v1/patients/{person_id}"),
    ),
    responses(
        (status = 200, description = "`active` (the signing in force, or null) and `signings` (every one, newest first)", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD, ECARD_INVALID, ECARD_EXPIRED", body = crate::openapi::ProblemDoc),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT, CARD_UNUSABLE", body = crate::openapi::ProblemDoc),
        (status = 429, description = "RATE_LIMITED", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[get("/patients/{person_id}/family-doctor-signings")]
pub async fn list(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let person = uuid_param(&path, "person_id")?;
    authorize(&state, &caller, &req, person, Access::Read).await?;
    let answer = state
        .patients
        .call(
            Method::GET,
            &format!("/v1/persons/{person}/family-doctor-signings"),
            None,
            None,
        )
        .await?;
    Ok(answer.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/patients/{person_id}/family-doctor-signings/{signing_id}/end",
    tag = "family-doctor",
    params(
        ("person_id" = Uuid, Path, description = "The resident"),
        ("signing_id" = Uuid, Path, description = "Their signing"),
        ("X-Patient-Ecard-Token" = Option<String>, Header, description = "From an app that did not enrol the resident: their own e-card token"),
    ),
    responses(
        (status = 200, description = "Ended now (or already ended or expired: as it is); signing again is allowed", body = serde_json::Value),
        (status = 401, description = "UNKNOWN_APP, BAD_SIGNATURE, STALE_TIMESTAMP, REPLAYED_NONCE", body = crate::openapi::ProblemDoc),
        (status = 403, description = "NOT_YOUR_PATIENT", body = crate::openapi::ProblemDoc),
        (status = 404, description = "SIGNING_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 503, description = "IDENTITY_UNAVAILABLE, with Retry-After", body = crate::openapi::ProblemDoc),
    ),
    security(("signed_request" = []))
)]
#[post("/patients/{person_id}/family-doctor-signings/{signing_id}/end")]
#[tracing::instrument(skip_all, fields(app = %caller.app_id))]
pub async fn end(
    caller: Caller,
    state: web::Data<GatewayState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let person = uuid_param(&path.0, "person_id")?;
    let signing = uuid_param(&path.1, "signing_id")?;
    authorize(&state, &caller, &req, person, Access::Act).await?;
    let upstream = serde_json::json!({ "ended_by": format!("person/app:{}", caller.app_id) });
    changed(
        &state,
        person,
        &format!("/v1/persons/{person}/family-doctor-signings/{signing}/end"),
        &upstream,
    )
    .await
}

/// A change of the person's signing at card-issuing; on success their
/// cached signing is dropped, so their next booking sees it.
async fn changed(
    state: &GatewayState,
    person: uuid::Uuid,
    path: &str,
    body: &serde_json::Value,
) -> Result<HttpResponse, GatewayError> {
    let answer = state.patients.call(Method::POST, path, Some(body), None).await?;
    if answer.status.is_success() {
        state.patients.forget(person).await;
    }
    Ok(answer.into_response())
}
