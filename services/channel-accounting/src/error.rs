//! Every error channel-accounting answers, each with a stable machine code.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use jyt_web::{Problem, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No bearer token, or one that is unknown or expired.
    #[error("a valid operator session is required")]
    Unauthenticated,
    #[error("wrong login or password")]
    InvalidCredentials,
    /// Too many failed logins for this login name or client address; the
    /// password was not checked.
    #[error("too many failed logins from this {limit}; retry after {retry_after_seconds} s")]
    LoginThrottled {
        limit: &'static str,
        retry_after_seconds: u64,
    },
    #[error("`{field}`: {reason}")]
    Forbidden { field: &'static str, reason: String },
    /// A statement file that cannot be read; nothing of it is stored.
    #[error("statement line {line}: {reason}")]
    StatementMalformed { line: u64, reason: String },
    /// No survey with this id (or not one this door may show).
    #[error("no survey `{0}`")]
    SurveyNotFound(uuid::Uuid),
    /// The survey closed seven days after the visit; nothing was recorded.
    #[error("the survey closed at {expires_at}")]
    SurveyExpired {
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// Answered before with other answers; the first answer stands.
    #[error("the survey was answered at {answered_at} with other answers; the first answer stands")]
    SurveyAlreadyAnswered {
        answered_at: chrono::DateTime<chrono::Utc>,
    },
    #[error("the accounting database is unavailable: {0}")]
    DatabaseUnavailable(String),
    /// Redis (the login throttle) is unreachable: logins are refused rather
    /// than let through uncounted.
    #[error("the login throttle is unavailable: {0}")]
    CacheUnavailable(String),
    /// The gateway's operators' relay is not configured or not answering:
    /// 加号 and dead letters are out of reach, nothing was changed.
    #[error("the gateway relay is unavailable: {0}")]
    RelayUnavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AccountingError {
    pub fn code(&self) -> &'static str {
        match self {
            AccountingError::Request(e) => e.code(),
            AccountingError::Unauthenticated => "UNAUTHENTICATED",
            AccountingError::InvalidCredentials => "INVALID_CREDENTIALS",
            AccountingError::LoginThrottled { .. } => "LOGIN_THROTTLED",
            AccountingError::Forbidden { .. } => "FORBIDDEN",
            AccountingError::StatementMalformed { .. } => "STATEMENT_MALFORMED",
            AccountingError::SurveyNotFound(_) => "SURVEY_NOT_FOUND",
            AccountingError::SurveyExpired { .. } => "SURVEY_EXPIRED",
            AccountingError::SurveyAlreadyAnswered { .. } => "SURVEY_ALREADY_ANSWERED",
            AccountingError::DatabaseUnavailable(_) => "DATABASE_UNAVAILABLE",
            AccountingError::CacheUnavailable(_) => "CACHE_UNAVAILABLE",
            AccountingError::RelayUnavailable(_) => "RELAY_UNAVAILABLE",
            AccountingError::Internal(_) => "INTERNAL",
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AccountingError::Request(RequestError::invalid(field, reason))
    }
}

impl From<jyt_db::deadpool_postgres::PoolError> for AccountingError {
    fn from(e: jyt_db::deadpool_postgres::PoolError) -> Self {
        AccountingError::DatabaseUnavailable(e.to_string())
    }
}

impl From<jyt_cache::redis::RedisError> for AccountingError {
    fn from(e: jyt_cache::redis::RedisError) -> Self {
        AccountingError::CacheUnavailable(e.to_string())
    }
}

impl From<jyt_db::tokio_postgres::Error> for AccountingError {
    fn from(e: jyt_db::tokio_postgres::Error) -> Self {
        AccountingError::DatabaseUnavailable(e.to_string())
    }
}

impl ResponseError for AccountingError {
    fn status_code(&self) -> StatusCode {
        match self {
            AccountingError::Request(e) => e.status_code(),
            AccountingError::Unauthenticated | AccountingError::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            AccountingError::LoginThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            AccountingError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AccountingError::StatementMalformed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AccountingError::SurveyNotFound(_) => StatusCode::NOT_FOUND,
            AccountingError::SurveyExpired { .. } => StatusCode::GONE,
            AccountingError::SurveyAlreadyAnswered { .. } => StatusCode::CONFLICT,
            AccountingError::DatabaseUnavailable(_)
            | AccountingError::CacheUnavailable(_)
            | AccountingError::RelayUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AccountingError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let problem = |title: &str| Problem::new(status, self.code(), title).detail(self.to_string());
        match self {
            AccountingError::Request(e) => e.error_response(),
            AccountingError::Unauthenticated => {
                let mut res = problem("Unauthorized").field("Authorization").to_response(None);
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                res
            }
            AccountingError::InvalidCredentials => {
                problem("Unauthorized").field("password").to_response(None)
            }
            AccountingError::LoginThrottled {
                retry_after_seconds, ..
            } => problem("Too many failed logins")
                .field("login")
                .to_response(Some(*retry_after_seconds)),
            AccountingError::Forbidden { field, .. } => problem("Forbidden").field(*field).to_response(None),
            AccountingError::StatementMalformed { line, .. } => problem("Statement file refused")
                .field("body")
                .extension("line", *line)
                .to_response(None),
            AccountingError::SurveyNotFound(_) => {
                problem("No such survey").field("survey_id").to_response(None)
            }
            AccountingError::SurveyExpired { expires_at } => problem("Survey closed")
                .field("survey_id")
                .extension("expires_at", expires_at.to_rfc3339())
                .to_response(None),
            AccountingError::SurveyAlreadyAnswered { answered_at } => problem("Survey already answered")
                .field("body")
                .extension("answered_at", answered_at.to_rfc3339())
                .to_response(None),
            AccountingError::DatabaseUnavailable(reason) => {
                tracing::error!(code = self.code(), %reason, "request failed");
                Problem::new(status, self.code(), "Reports are briefly unavailable").to_response(Some(1))
            }
            AccountingError::CacheUnavailable(reason) => {
                tracing::error!(code = self.code(), %reason, "request failed");
                Problem::new(status, self.code(), "Logins are briefly unavailable").to_response(Some(1))
            }
            AccountingError::RelayUnavailable(reason) => {
                tracing::warn!(code = self.code(), %reason, "relay failed");
                Problem::new(status, self.code(), "The gateway relay is unavailable")
                    .detail(self.to_string())
                    .to_response(Some(2))
            }
            AccountingError::Internal(e) => {
                tracing::error!(code = self.code(), error = format!("{e:#}"), "request failed");
                Problem::new(status, self.code(), "Internal Server Error").to_response(None)
            }
        }
    }
}
