//! Operator login and logout: `POST /v1/operators/login` answers an opaque
//! bearer token; `GET /v1/operators/me`; `DELETE /v1/operators/session`.
//! A login is refused with `429 LOGIN_THROTTLED` (and `Retry-After`) after
//! too many failures for its name or its client address, see
//! [`auth::throttle`].

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use jyt_db::deadpool_postgres::Pool;
use jyt_web::Json;
use serde::{Deserialize, Serialize};

use crate::auth::throttle::LoginThrottle;
use crate::auth::{self, Operator};
use crate::error::AccountingError;
use crate::settings::OperatorSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub login: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub login: String,
    pub role: String,
    pub hospital_id: Option<String>,
}

#[post("/v1/operators/login")]
pub async fn login(
    req: HttpRequest,
    pool: web::Data<Pool>,
    settings: web::Data<OperatorSettings>,
    throttle: web::Data<LoginThrottle>,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, AccountingError> {
    let body = body.0;
    if body.login.trim().is_empty() || body.login.len() > 64 {
        return Err(AccountingError::invalid("login", "must be 1 to 64 characters"));
    }
    if body.password.is_empty() || body.password.len() > 1024 {
        return Err(AccountingError::invalid(
            "password",
            "must be 1 to 1024 characters",
        ));
    }
    let login = body.login.trim();
    // Counted before the password is checked; over a limit it is not.
    let attempt = throttle
        .admit(login, req.peer_addr().map(|peer| peer.ip()))
        .await?;
    let outcome = auth::login(&pool, login, &body.password, settings.session_ttl_minutes).await;
    if !matches!(outcome, Ok(None)) {
        // Logged in, or failed on our side: not a failed guess.
        throttle.forgive(&attempt).await;
    }
    let session = outcome?.ok_or(AccountingError::InvalidCredentials)?;
    tracing::info!(operator = %session.operator.login, "operator logged in");
    Ok(HttpResponse::Ok().json(LoginResponse {
        token: session.token,
        expires_at: session.expires_at,
        role: session.operator.role_name().to_owned(),
        hospital_id: session.operator.hospital_id().map(str::to_owned),
        login: session.operator.login,
    }))
}

#[get("/v1/operators/me")]
pub async fn me(operator: Operator) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "login": operator.login,
        "role": operator.role_name(),
        "hospital_id": operator.hospital_id(),
    }))
}

#[delete("/v1/operators/session")]
pub async fn logout(
    req: HttpRequest,
    pool: web::Data<Pool>,
    _operator: Operator,
) -> Result<HttpResponse, AccountingError> {
    if let Some(token) = auth::bearer(&req) {
        auth::logout(&pool, &token).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}
