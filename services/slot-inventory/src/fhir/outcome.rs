//! Every error of the FHIR API is an `OperationOutcome`, with the HTTP
//! status and machine code the service's [`SlotError`] already has: the
//! code goes in `issue[0].details.coding` (system `urn:jyt:error-code`),
//! the offending parameter in `issue[0].expression`.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use jyt_web::RequestError;
use serde_json::{Value, json};

use super::{ERROR_CODE_SYSTEM, FHIR_JSON};
use crate::error::SlotError;

/// A [`SlotError`] answered as an `OperationOutcome`.
#[derive(Debug)]
pub struct FhirError(pub SlotError);

impl FhirError {
    /// Bad input in `param` (a search parameter, `Parameters` entry or
    /// header), refused with 400 naming it.
    pub fn invalid(param: impl Into<String>, reason: impl Into<String>) -> Self {
        FhirError(SlotError::Request(RequestError::invalid(param, reason)))
    }
}

impl From<SlotError> for FhirError {
    fn from(e: SlotError) -> Self {
        FhirError(e)
    }
}

impl From<RequestError> for FhirError {
    fn from(e: RequestError) -> Self {
        FhirError(SlotError::Request(e))
    }
}

impl From<jyt_db::tokio_postgres::Error> for FhirError {
    fn from(e: jyt_db::tokio_postgres::Error) -> Self {
        FhirError(e.into())
    }
}

impl From<jyt_db::deadpool_postgres::PoolError> for FhirError {
    fn from(e: jyt_db::deadpool_postgres::PoolError) -> Self {
        FhirError(e.into())
    }
}

impl fmt::Display for FhirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The FHIR issue type (a required binding) for each kind of error.
fn issue_type(e: &SlotError) -> &'static str {
    match e {
        SlotError::Request(r) => match r {
            RequestError::MalformedJson { .. } => "structure",
            RequestError::InvalidField { .. } => "invalid",
            RequestError::MissingHeader { .. } => "required",
            RequestError::UnsupportedMediaType => "not-supported",
            RequestError::BodyTooLarge { .. } => "too-long",
        },
        SlotError::SlotNotFound(_)
        | SlotError::BookingNotFound(_)
        | SlotError::ScheduleNotFound(_)
        | SlotError::DoctorNotFound(_)
        | SlotError::PreciseProfileNotFound(_)
        | SlotError::PreciseSubmissionNotFound(_)
        | SlotError::EntryNotFound(_)
        | SlotError::DrawNotFound(_) => "not-found",
        SlotError::PreciseAlreadySubmitted | SlotError::PreciseAlreadyDecided(_) => "conflict",
        SlotError::ClinicNotSoldOut(_) => "business-rule",
        SlotError::LotteryEntered(_) => "informational",
        SlotError::SlotSoldOut
        | SlotError::AlreadyBooked(_)
        | SlotError::AlreadyConfirmed
        | SlotError::PaymentReferenceUsed
        | SlotError::AlreadyWaitlisted
        | SlotError::IdempotencyKeyReused => "conflict",
        SlotError::HoldExpired => "expired",
        SlotError::RequestInProgress => "lock-error",
        SlotError::NotYetReleased(_)
        | SlotError::ScheduleStopped
        | SlotError::ScheduleAlreadyBooked
        | SlotError::DepartmentDailyLimit
        | SlotError::DailyLimit
        | SlotError::BookingNotHeld(_)
        | SlotError::BookingNotCancellable(_)
        | SlotError::CancellationClosed(_)
        | SlotError::NotCheckInable(_)
        | SlotError::NotCompletable(_)
        | SlotError::CheckInClosed { .. }
        | SlotError::SeatsAvailable
        | SlotError::DrawPending(_)
        | SlotError::WaitlistEntryGone
        | SlotError::Referral(_) => "business-rule",
        SlotError::WrongPickupCode { .. } | SlotError::PickupLocked => "forbidden",
        SlotError::LockUnavailable(_) | SlotError::DatabaseUnavailable(_) => "transient",
        SlotError::Unexpected(_) => "exception",
    }
}

/// An `OperationOutcome` with one error issue.
pub fn operation_outcome(code: &str, issue: &str, diagnostics: &str, expression: Option<&str>) -> Value {
    let mut entry = json!({
        "severity": "error",
        "code": issue,
        "details": {
            "coding": [{ "system": ERROR_CODE_SYSTEM, "code": code }],
            "text": diagnostics,
        },
        "diagnostics": diagnostics,
    });
    if let (Some(expression), Some(obj)) = (expression, entry.as_object_mut()) {
        obj.insert("expression".into(), json!([expression]));
    }
    json!({ "resourceType": "OperationOutcome", "issue": [entry] })
}

impl ResponseError for FhirError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        // The service's own answer: it logs server errors and knows which
        // ones carry `Retry-After`.
        let problem = self.0.error_response();
        if matches!(self.0, SlotError::LotteryEntered(_)) {
            // Not an error: the lottery entry itself, as `/v1/bookings` answers it.
            return problem;
        }
        let expression = match &self.0 {
            SlotError::Request(RequestError::InvalidField { field, .. }) => Some(field.as_str()),
            SlotError::Request(RequestError::MissingHeader { header }) => Some(*header),
            // Only `$book` pays: its parameter.
            SlotError::PaymentReferenceUsed => Some("paymentReference"),
            _ => None,
        };
        let diagnostics = match &self.0 {
            // Internal details stay in the log.
            SlotError::Unexpected(_) => "internal error".to_owned(),
            SlotError::LockUnavailable(_) | SlotError::DatabaseUnavailable(_) => {
                "booking is briefly unavailable; retry shortly".to_owned()
            }
            other => other.to_string(),
        };
        let body = operation_outcome(self.0.code(), issue_type(&self.0), &diagnostics, expression);
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON)));
        if let Some(retry) = problem.headers().get(header::RETRY_AFTER) {
            res.insert_header((header::RETRY_AFTER, retry.clone()));
        }
        res.body(body.to_string())
    }
}

/// The `/fhir` scope's default service: unknown paths and methods.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let body = operation_outcome(
        "NOT_FOUND",
        "not-found",
        &format!("no FHIR interaction for {} {}", req.method(), req.path()),
        None,
    );
    HttpResponse::build(StatusCode::NOT_FOUND)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON)))
        .body(body.to_string())
}
