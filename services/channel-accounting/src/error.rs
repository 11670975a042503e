//! Every error channel-accounting answers, each with a stable machine code.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use jyt_web::{Problem, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the accounting database is unavailable: {0}")]
    DatabaseUnavailable(String),
}

impl AccountingError {
    pub fn code(&self) -> &'static str {
        match self {
            AccountingError::Request(e) => e.code(),
            AccountingError::DatabaseUnavailable(_) => "DATABASE_UNAVAILABLE",
        }
    }
}

impl From<jyt_db::deadpool_postgres::PoolError> for AccountingError {
    fn from(e: jyt_db::deadpool_postgres::PoolError) -> Self {
        AccountingError::DatabaseUnavailable(e.to_string())
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
            AccountingError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AccountingError::Request(e) => e.error_response(),
            AccountingError::DatabaseUnavailable(reason) => {
                tracing::error!(code = self.code(), %reason, "request failed");
                Problem::new(self.status_code(), self.code(), "Reports are briefly unavailable")
                    .to_response(Some(1))
            }
        }
    }
}
