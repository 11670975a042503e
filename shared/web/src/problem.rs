//! RFC 9457 problem details. Every error any service answers has this shape,
//! and `code` is the stable, machine-readable part clients switch on; the
//! prose in `title` and `detail` may change.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the kind of problem; `urn:jyt:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable machine code, e.g. `SLOT_SOLD_OUT`.
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request field (body path, query parameter or header) at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Extra members particular to the problem (e.g. `release_at`).
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, title: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:jyt:problem:{}", code.to_ascii_lowercase().replace('_', "-")),
            title: title.into(),
            status: status.as_u16(),
            code: code.to_owned(),
            detail: None,
            field: None,
            extensions: serde_json::Map::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn extension(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The HTTP response; `retry_after` adds the `Retry-After` header (429, 503).
    pub fn to_response(&self, retry_after_seconds: Option<u64>) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)));
        if let Some(secs) = retry_after_seconds {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.json(self)
    }
}

/// Input refused before any handler logic runs. Services wrap it in their
/// own error enum so one `ResponseError` impl covers everything.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not valid JSON: {detail}")]
    MalformedJson { detail: String },
    #[error("`{field}` is invalid: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("header `{header}` is required")]
    MissingHeader { header: &'static str },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
}

impl RequestError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RequestError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RequestError::MalformedJson { .. } => "MALFORMED_JSON",
            RequestError::InvalidField { .. } => "INVALID_FIELD",
            RequestError::MissingHeader { .. } => "MISSING_HEADER",
            RequestError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            RequestError::BodyTooLarge { .. } => "BODY_TOO_LARGE",
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let p = Problem::new(
            status,
            self.code(),
            status.canonical_reason().unwrap_or("Bad Request"),
        )
        .detail(self.to_string());
        match self {
            RequestError::InvalidField { field, .. } => p.field(field.clone()),
            RequestError::MissingHeader { header } => p.field(*header),
            _ => p,
        }
    }
}

impl ResponseError for RequestError {
    fn status_code(&self) -> StatusCode {
        match self {
            RequestError::MalformedJson { .. }
            | RequestError::InvalidField { .. }
            | RequestError::MissingHeader { .. } => StatusCode::BAD_REQUEST,
            RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.problem().to_response(None)
    }
}

/// The default service: unknown paths answer problem+json too.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found")
        .detail(format!("no route for {} {}", req.method(), req.path()))
        .to_response(None)
}
