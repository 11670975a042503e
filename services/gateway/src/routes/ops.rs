//! The operators' relay, `/ops/v1`: what the console (channel-accounting,
//! which logs operators in) may ask of the services only the gateway can
//! reach. Every call carries an internal token for audience `gateway-ops`
//! (key derived from the gateway's master secret, like the others) whose
//! caller name is the acting operator and their hospital
//! ([`ActingOperator`]). The gateway checks it again here: a hospital
//! operator never reaches another hospital, city-wide operations need a
//! city operator. It then relays with its own per-audience tokens, naming
//! the operator as the change's actor (`X-Actor: operator:<login>`), which
//! the change's event carries into the audit trail.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, get, post, put, web};
use futures::future::{Ready, ready};
use jyt_domain::HospitalId;
use jyt_signing::internal::{self, ActingOperator, GATEWAY_OPS, Verifier};
use jyt_web::{Query, RequestError};
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::state::GatewayState;

/// The operator a relay call acts for, from its verified token.
#[derive(Debug, Clone)]
pub struct OpsOperator(pub ActingOperator);

impl OpsOperator {
    /// The path's hospital, if this operator may act on it.
    fn hospital(&self, raw: &str) -> Result<HospitalId, GatewayError> {
        let id: HospitalId = raw
            .parse()
            .map_err(|e: jyt_domain::ParseError| RequestError::invalid("hospital_id", e.to_string()))?;
        match &self.0.hospital {
            Some(own) if *own != id.to_string() => Err(GatewayError::HospitalForbidden),
            _ => Ok(id),
        }
    }

    fn require_city(&self, what: &str) -> Result<(), GatewayError> {
        match self.0.hospital {
            None => Ok(()),
            Some(_) => Err(GatewayError::OperatorForbidden(format!(
                "{what} needs a city operator"
            ))),
        }
    }

    /// `X-Actor` for the hospital's service.
    fn actor_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("operator:{}", self.0.login)) {
            headers.insert("X-Actor", v);
        }
        headers
    }
}

/// The relay's verifier: the `gateway-ops` key from the master secret.
pub fn verifier(state: &GatewayState) -> Verifier {
    let auth = &state.settings.internal_auth;
    let key = internal::derive_key(auth.master_secret.expose_secret().as_bytes(), GATEWAY_OPS);
    Verifier::new(key.as_bytes(), GATEWAY_OPS, auth.token_lifetime_seconds)
}

impl FromRequest for OpsOperator {
    type Error = GatewayError;
    type Future = Ready<Result<Self, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<GatewayState>>() else {
            return ready(Err(GatewayError::OperatorUnauthorized));
        };
        let token = req.headers().get(internal::HEADER).and_then(|v| v.to_str().ok());
        let outcome = verifier(state)
            .verify(token)
            .map_err(|refusal| {
                tracing::warn!(reason = refusal.as_str(), path = req.path(), "ops token refused");
                GatewayError::OperatorUnauthorized
            })
            .and_then(|caller| {
                ActingOperator::from_caller(&caller)
                    .map(OpsOperator)
                    .ok_or(GatewayError::OperatorUnauthorized)
            });
        ready(outcome)
    }
}

/// The dead letters, for a city operator.
#[utoipa::path(
    get, path = "/ops/v1/notifications/dead-letters", tag = "operations",
    responses(
        (status = 200, description = "Notices that exhausted their retries", body = serde_json::Value),
        (status = 401, description = "OPERATOR_UNAUTHORIZED: no valid `gateway-ops` token", body = crate::openapi::ProblemDoc),
        (status = 403, description = "OPERATOR_FORBIDDEN: a hospital operator", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[get("/ops/v1/notifications/dead-letters")]
pub async fn dead_letters(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
) -> Result<HttpResponse, GatewayError> {
    operator.require_city("the notification dead letters")?;
    let dead = state.notifier.dead_letters().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "dead_letters": dead })))
}

/// Replay one dead letter, for a city operator.
#[utoipa::path(
    post, path = "/ops/v1/notifications/dead-letters/{id}/replay", tag = "operations",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses(
        (status = 202, description = "Queued for delivery again", body = serde_json::Value),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 403, description = "OPERATOR_FORBIDDEN: a hospital operator", body = crate::openapi::ProblemDoc),
        (status = 404, description = "DEAD_LETTER_NOT_FOUND", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[post("/ops/v1/notifications/dead-letters/{id}/replay")]
pub async fn replay_dead_letter(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    operator.require_city("replaying a dead letter")?;
    if state.notifier.replay(&path).await? {
        tracing::info!(operator = %operator.0.login, dead_letter = %path, "dead letter replayed");
        Ok(HttpResponse::Accepted().json(serde_json::json!({ "replayed": path.as_str() })))
    } else {
        Err(GatewayError::DeadLetterNotFound(path.into_inner()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateQuery {
    pub date: chrono::NaiveDate,
}

/// A hospital's schedules of a day with each segment's capacity, for the
/// operator answering a 加号 request.
#[utoipa::path(
    get, path = "/ops/v1/hospitals/{hospital_id}/schedules", tag = "operations",
    params(("hospital_id" = String, Path, description = "The hospital"), ("date" = String, Query, description = "Visit date, YYYY-MM-DD")),
    responses(
        (status = 200, description = "The day's schedules and segments", body = serde_json::Value),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's operator", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[get("/ops/v1/hospitals/{hospital_id}/schedules")]
pub async fn schedules(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
    path: web::Path<String>,
    query: Query<DateQuery>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = operator.hospital(&path)?;
    let target = format!("/v1/schedules?date={}", query.0.date);
    let answer = state
        .upstreams
        .forward(&hospital, reqwest::Method::GET, &target, HeaderMap::new(), None)
        .await?;
    Ok(answer.into_response())
}

/// 加号 by an operator: a segment's new capacity; new seats go to the
/// waitlist first. The change's event names the operator.
#[utoipa::path(
    put, path = "/ops/v1/hospitals/{hospital_id}/segments/{segment_id}/capacity", tag = "operations",
    params(("hospital_id" = String, Path, description = "The hospital"), ("segment_id" = String, Path, description = "The segment's UUID")),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 200, description = "The new capacity and the patients it went to", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD `capacity` (below a booked seat, or out of range)", body = crate::openapi::ProblemDoc),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's operator", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[put("/ops/v1/hospitals/{hospital_id}/segments/{segment_id}/capacity")]
pub async fn set_capacity(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, GatewayError> {
    let hospital = operator.hospital(&path.0)?;
    let segment =
        Uuid::parse_str(&path.1).map_err(|_| RequestError::invalid("segment_id", "must be a UUID"))?;
    let target = format!("/v1/segments/{segment}/capacity");
    let answer = state
        .upstreams
        .forward(
            &hospital,
            reqwest::Method::PUT,
            &target,
            operator.actor_headers(),
            Some(body.to_vec()),
        )
        .await?;
    if answer.status.is_success() {
        tracing::info!(operator = %operator.0.login, %hospital, %segment, "加号 by an operator");
    }
    Ok(answer.into_response())
}

/// A schedule's lottery draw record (for the console's draws page).
#[utoipa::path(
    get, path = "/ops/v1/hospitals/{hospital_id}/schedules/{schedule_id}/draw", tag = "operations",
    params(("hospital_id" = String, Path, description = "The hospital"), ("schedule_id" = String, Path, description = "The schedule's UUID")),
    responses(
        (status = 200, description = "The draw record with the hospital's reproduction check", body = serde_json::Value),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's operator", body = crate::openapi::ProblemDoc),
        (status = 404, description = "DRAW_NOT_FOUND", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[get("/ops/v1/hospitals/{hospital_id}/schedules/{schedule_id}/draw")]
pub async fn draw(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = operator.hospital(&path.0)?;
    crate::routes::draws::record(&state, &hospital, &path.1).await
}

/// A hospital's booking policy (release time, window, pool shares, limits)
/// with its version and who changed it last.
#[utoipa::path(
    get, path = "/ops/v1/hospitals/{hospital_id}/policy", tag = "operations",
    params(("hospital_id" = String, Path, description = "The hospital")),
    responses(
        (status = 200, description = "The policy in force", body = serde_json::Value),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's operator", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[get("/ops/v1/hospitals/{hospital_id}/policy")]
pub async fn policy(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let hospital = operator.hospital(&path)?;
    let answer = state
        .upstreams
        .forward(
            &hospital,
            reqwest::Method::GET,
            "/v1/policy",
            HeaderMap::new(),
            None,
        )
        .await?;
    Ok(answer.into_response())
}

/// Replace a hospital's booking policy (whole): validated by the hospital,
/// applied to schedules not yet released, its event naming the operator.
#[utoipa::path(
    put, path = "/ops/v1/hospitals/{hospital_id}/policy", tag = "operations",
    params(("hospital_id" = String, Path, description = "The hospital")),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 200, description = "The new policy and how many unreleased schedules it moved", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD naming the field, e.g. `window_days`; nothing written", body = crate::openapi::ProblemDoc),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's operator", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[put("/ops/v1/hospitals/{hospital_id}/policy")]
pub async fn set_policy(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, GatewayError> {
    let hospital = operator.hospital(&path)?;
    let answer = state
        .upstreams
        .forward(
            &hospital,
            reqwest::Method::PUT,
            "/v1/policy",
            operator.actor_headers(),
            Some(body.to_vec()),
        )
        .await?;
    if answer.status.is_success() {
        tracing::info!(operator = %operator.0.login, %hospital, "booking policy changed by an operator");
    }
    Ok(answer.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppealsQuery {
    pub status: Option<String>,
    pub hospital_id: Option<String>,
    pub limit: Option<i64>,
}

/// The appeals queue (or history) at card-issuing: every hospital's for a
/// city operator, a hospital operator's own hospital's only.
#[utoipa::path(
    get, path = "/ops/v1/appeals", tag = "operations",
    params(
        ("status" = Option<String>, Query, description = "pending (default at card-issuing), granted, refused or all"),
        ("hospital_id" = Option<String>, Query, description = "One hospital's appeals; a hospital operator's own, whatever is asked"),
        ("limit" = Option<i64>, Query, description = "1 to 500"),
    ),
    responses(
        (status = 200, description = "The appeals, newest first (ids only: no name, no ID number)", body = serde_json::Value),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 403, description = "HOSPITAL_FORBIDDEN: another hospital's operator", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[get("/ops/v1/appeals")]
pub async fn appeals(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
    query: Query<AppealsQuery>,
) -> Result<HttpResponse, GatewayError> {
    let q = query.0;
    let hospital = match (&operator.0.hospital, q.hospital_id) {
        (Some(own), Some(asked)) if *own != asked => return Err(GatewayError::HospitalForbidden),
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked,
    };
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(s) = q.status {
        params.push(("status", s));
    }
    if let Some(h) = hospital {
        params.push(("hospital_id", h));
    }
    if let Some(l) = q.limit {
        params.push(("limit", l.to_string()));
    }
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let path = if query.is_empty() {
        "/v1/appeals".to_owned()
    } else {
        format!("/v1/appeals?{query}")
    };
    let answer = state
        .patients
        .call(reqwest::Method::GET, &path, None, None)
        .await?;
    Ok(answer.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub decision: String,
    pub reason: String,
}

/// Waive or refuse a pending appeal, with a reason: a city operator's
/// decision (a bar stops booking at every hospital). card-issuing records
/// the operator the token names, never one the body claims.
#[utoipa::path(
    post, path = "/ops/v1/appeals/{appeal_id}/decision", tag = "operations",
    params(("appeal_id" = String, Path, description = "The appeal's UUID")),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 200, description = "The decided appeal", body = serde_json::Value),
        (status = 400, description = "INVALID_FIELD `decision` or `reason`", body = crate::openapi::ProblemDoc),
        (status = 401, description = "OPERATOR_UNAUTHORIZED", body = crate::openapi::ProblemDoc),
        (status = 403, description = "OPERATOR_FORBIDDEN: a hospital operator", body = crate::openapi::ProblemDoc),
        (status = 404, description = "APPEAL_NOT_FOUND", body = crate::openapi::ProblemDoc),
        (status = 409, description = "APPEAL_ALREADY_DECIDED", body = crate::openapi::ProblemDoc),
    ),
    security(("internal_token" = []))
)]
#[post("/ops/v1/appeals/{appeal_id}/decision")]
pub async fn decide_appeal(
    state: web::Data<GatewayState>,
    operator: OpsOperator,
    path: web::Path<String>,
    body: jyt_web::Json<Decision>,
) -> Result<HttpResponse, GatewayError> {
    operator.require_city("deciding an appeal")?;
    let appeal = Uuid::parse_str(&path).map_err(|_| RequestError::invalid("appeal_id", "must be a UUID"))?;
    if !["waive", "refuse"].contains(&body.0.decision.as_str()) {
        return Err(RequestError::invalid("decision", "must be `waive` or `refuse`").into());
    }
    let payload = serde_json::json!({
        "decision": body.0.decision,
        "reason": body.0.reason,
        "operator": format!("gateway/operator:{}", operator.0.login),
    });
    let answer = state
        .patients
        .call(
            reqwest::Method::POST,
            &format!("/v1/appeals/{appeal}/decision"),
            Some(&payload),
            None,
        )
        .await?;
    if answer.status.is_success() {
        tracing::info!(operator = %operator.0.login, %appeal, "appeal decided by an operator");
    }
    Ok(answer.into_response())
}

/// Percent-encode a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
