//! Every error the gateway itself answers. Errors from a hospital's
//! slot-inventory are passed through unchanged (they are problem+json too).
//! [`ALL_CODES`] lists every machine code for the OpenAPI document.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use jyt_web::{Problem, RequestError};

impl From<jyt_cache::redis::RedisError> for GatewayError {
    fn from(e: jyt_cache::redis::RedisError) -> Self {
        GatewayError::CacheUnavailable(e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The raw path is not in canonical form (see `auth::non_canonical`).
    #[error("the request path {0}; send the canonical path")]
    NonCanonicalPath(&'static str),
    /// An internal service (slot-inventory, card-issuing) refused the
    /// gateway's internal token: the gateway's and the service's keys differ.
    #[error("an internal service refused the gateway's credentials")]
    InternalAuthRefused,
    /// No `X-App-Id`, or one we do not know.
    #[error("the channel app is missing or unknown")]
    UnknownApp,
    #[error("the request signature does not match")]
    BadSignature,
    #[error("X-Timestamp is more than {max_skew_seconds} s away from the gateway's clock")]
    StaleTimestamp { max_skew_seconds: i64 },
    #[error("this nonce was already used")]
    ReplayedNonce,
    /// A token bucket is empty; `limit` says which one.
    #[error("too many requests ({limit}); retry after {retry_after_seconds} s")]
    RateLimited {
        limit: &'static str,
        retry_after_seconds: u64,
    },
    #[error("no card with this number")]
    CardNotFound,
    #[error("the card cannot be used: {0}")]
    CardUnusable(&'static str),
    #[error("the e-card token is malformed or forged")]
    EcardInvalid,
    #[error("the e-card token has expired; show a fresh QR code")]
    EcardExpired,
    #[error("the patient is not the card holder nor one of their bound family members")]
    NotFamilyMember,
    #[error("the patient is barred from booking until {until}")]
    PatientBarred { until: DateTime<Utc> },
    #[error("the patient already has {limit} bookings today across the city")]
    DailyLimitReached { limit: u32 },
    #[error("the patient index is not answering")]
    IdentityUnavailable(String),
    /// Redis (nonces, caches, city-wide counters) did not answer in time.
    #[error("the gateway's store is not answering")]
    CacheUnavailable(String),
    #[error("the card's prepaid balance is too low for the fee")]
    InsufficientBalance,
    /// The hold ended before the payment arrived; `refund` says who gives
    /// the money back.
    #[error("the booking's hold expired before it was paid; {refund}")]
    HoldExpired { refund: &'static str },
    #[error("the booking was made through another channel app")]
    NotYourBooking,
    /// Money leaves a card only with the patient's own proof of presence.
    #[error("paying a card's balance out needs the patient's own e-card token, or a kiosk or window")]
    PatientProofRequired,
    /// An e-card token asked for by an app of another channel than the card's.
    #[error(
        "e-card tokens of this card are minted for the apps of the channel it was issued through, or at a kiosk or window"
    )]
    CardOfAnotherChannel,
    #[error("a payment with this reference is being processed")]
    PaymentInProgress,
    /// FHIR `$book` pays from the prepaid card only: a channel's own
    /// payment is confirmed by its signed payment notification.
    #[error(
        "self-pay and insurance payments are confirmed by the channel's signed payment notification, POST /v1/bookings/{{id}}/payments"
    )]
    PaymentCallbackRequired,
    #[error("operator credentials are missing or wrong")]
    OperatorUnauthorized,
    #[error("no dead letter `{0}`")]
    DeadLetterNotFound(String),
    /// A console operator's role does not allow this (a hospital operator
    /// on a city-wide operation).
    #[error("{0}")]
    OperatorForbidden(String),
    #[error("hospital `{0}` is not a member of the platform")]
    HospitalNotFound(String),
    /// A hospital's credentials used on another hospital's data.
    #[error("these credentials belong to another hospital")]
    HospitalForbidden,
    /// The hospital's service timed out, refused, failed, or its circuit is
    /// open; only that hospital's requests see this.
    #[error("hospital `{hospital}` is not answering")]
    HospitalUnavailable { hospital: String, reason: String },
    /// A patient service for a person the app neither enrolled nor shows
    /// the patient's own proof for (or no such person: never told apart).
    #[error("this app did not enrol the patient and shows no proof from the patient")]
    NotYourPatient,
    /// A family member aged 16+ confirms with a code sent to their own app,
    /// and theirs takes no notices (or they were registered at a desk).
    #[error("the member has no channel app to send a one-time code to; bind them at a window")]
    MemberChannelUnknown,
    #[error("the member's channel app did not take the one-time code; try again")]
    MemberChannelUnreachable(String),
    /// A survey of another app's booking, or a card that is not the
    /// visit's patient's (nor the holder who booked for them).
    #[error("this survey belongs to another app's booking or another patient")]
    NotYourSurvey,
    /// channel-accounting's survey door failed or did not answer.
    #[error("surveys are unavailable: {0}")]
    SurveysUnavailable(String),
    /// A referral only a family doctor of the resident's own signed team,
    /// at that team's centre, may issue (the 医联体 path).
    #[error("{0}")]
    ReferralNotAllowed(&'static str),
    #[error("unexpected error: {0:#}")]
    Unexpected(#[from] anyhow::Error),
}

/// Every code the gateway answers (its own and the ones passed through from
/// slot-inventory), for the OpenAPI document.
pub const ALL_CODES: &[&str] = &[
    "MALFORMED_JSON",
    "NON_CANONICAL_PATH",
    "INVALID_FIELD",
    "MISSING_HEADER",
    "UNSUPPORTED_MEDIA_TYPE",
    "BODY_TOO_LARGE",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "UNKNOWN_APP",
    "BAD_SIGNATURE",
    "STALE_TIMESTAMP",
    "REPLAYED_NONCE",
    "RATE_LIMITED",
    "CARD_NOT_FOUND",
    "CARD_UNUSABLE",
    "ECARD_INVALID",
    "ECARD_EXPIRED",
    "NOT_FAMILY_MEMBER",
    "PATIENT_BARRED",
    "DAILY_LIMIT_REACHED",
    "IDENTITY_UNAVAILABLE",
    "CACHE_UNAVAILABLE",
    "INSUFFICIENT_BALANCE",
    "HOLD_EXPIRED",
    "NOT_YOUR_BOOKING",
    "PATIENT_PROOF_REQUIRED",
    "CARD_OF_ANOTHER_CHANNEL",
    "PAYMENT_IN_PROGRESS",
    "PAYMENT_CALLBACK_REQUIRED",
    "OPERATOR_UNAUTHORIZED",
    "DEAD_LETTER_NOT_FOUND",
    "OPERATOR_FORBIDDEN",
    "HOSPITAL_NOT_FOUND",
    "HOSPITAL_FORBIDDEN",
    "HOSPITAL_UNAVAILABLE",
    "INTERNAL_ERROR",
    "NOT_YOUR_PATIENT",
    "MEMBER_CHANNEL_UNKNOWN",
    "MEMBER_CHANNEL_UNREACHABLE",
    "NOT_YOUR_SURVEY",
    "SURVEYS_UNAVAILABLE",
    "REFERRAL_NOT_ALLOWED",
    // From the hospital's slot-inventory, passed through unchanged.
    "SLOT_NOT_FOUND",
    "SLOT_SOLD_OUT",
    "ALREADY_BOOKED",
    "SCHEDULE_ALREADY_BOOKED",
    "SCHEDULE_STOPPED",
    "NOT_YET_RELEASED",
    "DAILY_LIMIT",
    "DEPARTMENT_DAILY_LIMIT",
    "IDEMPOTENCY_KEY_REUSED",
    "REQUEST_IN_PROGRESS",
    "BOOKING_NOT_FOUND",
    "BOOKING_NOT_HELD",
    "BOOKING_NOT_CANCELLABLE",
    "CANCELLATION_CLOSED",
    "ALREADY_CONFIRMED",
    "PAYMENT_REFERENCE_USED",
    "SCHEDULE_NOT_FOUND",
    "SEATS_AVAILABLE",
    "ALREADY_WAITLISTED",
    "DOCTOR_NOT_FOUND",
    "PRECISE_PROFILE_NOT_FOUND",
    "PRECISE_SUBMISSION_NOT_FOUND",
    "CLINIC_NOT_SOLD_OUT",
    "PRECISE_ALREADY_SUBMITTED",
    "PRECISE_ALREADY_DECIDED",
    "WRONG_PICKUP_CODE",
    "PICKUP_LOCKED",
    "CHECK_IN_CLOSED",
    "NOT_CHECK_INABLE",
    "NOT_COMPLETABLE",
    "SLOT_LOCK_UNAVAILABLE",
    "DATABASE_UNAVAILABLE",
    "REFERRAL_UNKNOWN",
    "REFERRAL_EXPIRED",
    "REFERRAL_USED",
    "REFERRAL_NOT_FOR_DEPARTMENT",
    "REFERRAL_OF_ANOTHER_PATIENT",
    // From card-issuing, passed through by the /v1/cards routes.
    "CARD_LOST",
    "CARD_REPLACED",
    "CARD_CANCELLED",
    "NOT_AN_ECARD",
    "REFERENCE_REUSED",
    // From card-issuing's appeals, passed through by /ops/v1/appeals.
    "APPEAL_NOT_FOUND",
    "APPEAL_ALREADY_DECIDED",
    // From card-issuing, passed through by the patient services
    // (/v1/patients, /v1/family-verifications).
    "ID_NUMBER_MALFORMED",
    "ID_NUMBER_BAD_BIRTH_DATE",
    "ID_NUMBER_BAD_CHECK_DIGIT",
    "IDENTITY_CONFLICT",
    "PERSON_NOT_FOUND",
    "CARD_ALREADY_ISSUED",
    "CHIP_SERIAL_IN_USE",
    "FAMILY_HOLDER_MONTHLY_LIMIT",
    "FAMILY_MEMBER_MONTHLY_LIMIT",
    "GUARDIAN_PROOF_REQUIRED",
    "VERIFICATION_NOT_FOUND",
    "VERIFICATION_CODE_WRONG",
    "VERIFICATION_EXPIRED",
    "VERIFICATION_LOCKED",
    "NO_SHOW_NOT_FOUND",
    "NO_SHOW_ALREADY_WAIVED",
    // From channel-accounting's survey door, passed through by /v1/surveys
    // and /federation/v1/hospitals/{id}/satisfaction.
    "FORBIDDEN",
    "SURVEY_NOT_FOUND",
    "SURVEY_EXPIRED",
    "SURVEY_ALREADY_ANSWERED",
    // From card-issuing's family doctor signings.
    "TEAM_NOT_FOUND",
    "TEAM_FULL",
    "ALREADY_SIGNED",
    "SIGNING_NOT_FOUND",
];

impl GatewayError {
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Request(e) => e.code(),
            GatewayError::NonCanonicalPath(_) => "NON_CANONICAL_PATH",
            GatewayError::InternalAuthRefused => "INTERNAL_ERROR",
            GatewayError::UnknownApp => "UNKNOWN_APP",
            GatewayError::BadSignature => "BAD_SIGNATURE",
            GatewayError::StaleTimestamp { .. } => "STALE_TIMESTAMP",
            GatewayError::ReplayedNonce => "REPLAYED_NONCE",
            GatewayError::RateLimited { .. } => "RATE_LIMITED",
            GatewayError::CardNotFound => "CARD_NOT_FOUND",
            GatewayError::CardUnusable(_) => "CARD_UNUSABLE",
            GatewayError::EcardInvalid => "ECARD_INVALID",
            GatewayError::EcardExpired => "ECARD_EXPIRED",
            GatewayError::NotFamilyMember => "NOT_FAMILY_MEMBER",
            GatewayError::PatientBarred { .. } => "PATIENT_BARRED",
            GatewayError::DailyLimitReached { .. } => "DAILY_LIMIT_REACHED",
            GatewayError::IdentityUnavailable(_) => "IDENTITY_UNAVAILABLE",
            GatewayError::CacheUnavailable(_) => "CACHE_UNAVAILABLE",
            GatewayError::InsufficientBalance => "INSUFFICIENT_BALANCE",
            GatewayError::HoldExpired { .. } => "HOLD_EXPIRED",
            GatewayError::NotYourBooking => "NOT_YOUR_BOOKING",
            GatewayError::PatientProofRequired => "PATIENT_PROOF_REQUIRED",
            GatewayError::CardOfAnotherChannel => "CARD_OF_ANOTHER_CHANNEL",
            GatewayError::PaymentInProgress => "PAYMENT_IN_PROGRESS",
            GatewayError::PaymentCallbackRequired => "PAYMENT_CALLBACK_REQUIRED",
            GatewayError::OperatorUnauthorized => "OPERATOR_UNAUTHORIZED",
            GatewayError::DeadLetterNotFound(_) => "DEAD_LETTER_NOT_FOUND",
            GatewayError::OperatorForbidden(_) => "OPERATOR_FORBIDDEN",
            GatewayError::HospitalNotFound(_) => "HOSPITAL_NOT_FOUND",
            GatewayError::HospitalForbidden => "HOSPITAL_FORBIDDEN",
            GatewayError::HospitalUnavailable { .. } => "HOSPITAL_UNAVAILABLE",
            GatewayError::NotYourPatient => "NOT_YOUR_PATIENT",
            GatewayError::MemberChannelUnknown => "MEMBER_CHANNEL_UNKNOWN",
            GatewayError::MemberChannelUnreachable(_) => "MEMBER_CHANNEL_UNREACHABLE",
            GatewayError::NotYourSurvey => "NOT_YOUR_SURVEY",
            GatewayError::SurveysUnavailable(_) => "SURVEYS_UNAVAILABLE",
            GatewayError::ReferralNotAllowed(_) => "REFERRAL_NOT_ALLOWED",
            GatewayError::Unexpected(_) => "INTERNAL_ERROR",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            GatewayError::Request(_) => "Bad request",
            GatewayError::NonCanonicalPath(_) => "Non-canonical path",
            GatewayError::InternalAuthRefused => "Internal error",
            GatewayError::UnknownApp => "Unknown channel app",
            GatewayError::BadSignature => "Bad signature",
            GatewayError::StaleTimestamp { .. } => "Stale timestamp",
            GatewayError::ReplayedNonce => "Replayed nonce",
            GatewayError::RateLimited { .. } => "Too many requests",
            GatewayError::CardNotFound => "Unknown card",
            GatewayError::CardUnusable(_) => "Card cannot be used",
            GatewayError::EcardInvalid => "Invalid e-card token",
            GatewayError::EcardExpired => "Expired e-card token",
            GatewayError::NotFamilyMember => "Not a family member",
            GatewayError::PatientBarred { .. } => "Patient barred",
            GatewayError::DailyLimitReached { .. } => "Daily limit reached",
            GatewayError::IdentityUnavailable(_) => "Patient index unavailable",
            GatewayError::CacheUnavailable(_) => "Store unavailable",
            GatewayError::InsufficientBalance => "Insufficient balance",
            GatewayError::HoldExpired { .. } => "Hold expired",
            GatewayError::NotYourBooking => "Not this app's booking",
            GatewayError::PatientProofRequired => "Patient's proof required",
            GatewayError::CardOfAnotherChannel => "Another channel's card",
            GatewayError::PaymentInProgress => "Payment in progress",
            GatewayError::PaymentCallbackRequired => "Pay through the payment notification",
            GatewayError::OperatorUnauthorized => "Operator unauthorized",
            GatewayError::DeadLetterNotFound(_) => "No such dead letter",
            GatewayError::OperatorForbidden(_) => "Operator forbidden",
            GatewayError::HospitalNotFound(_) => "Unknown hospital",
            GatewayError::HospitalForbidden => "Another hospital's data",
            GatewayError::HospitalUnavailable { .. } => "Hospital unavailable",
            GatewayError::NotYourPatient => "Not this app's patient",
            GatewayError::MemberChannelUnknown => "Member's channel unknown",
            GatewayError::MemberChannelUnreachable(_) => "Member's channel unreachable",
            GatewayError::NotYourSurvey => "Not this app's or patient's survey",
            GatewayError::SurveysUnavailable(_) => "Surveys unavailable",
            GatewayError::ReferralNotAllowed(_) => "Referral not allowed",
            GatewayError::Unexpected(_) => "Internal error",
        }
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            GatewayError::Request(e) => e.status_code(),
            GatewayError::NonCanonicalPath(_) => StatusCode::BAD_REQUEST,
            GatewayError::InternalAuthRefused => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::UnknownApp
            | GatewayError::BadSignature
            | GatewayError::StaleTimestamp { .. }
            | GatewayError::ReplayedNonce
            | GatewayError::OperatorUnauthorized => StatusCode::UNAUTHORIZED,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::CardNotFound => StatusCode::NOT_FOUND,
            GatewayError::EcardInvalid | GatewayError::EcardExpired => StatusCode::BAD_REQUEST,
            GatewayError::CardUnusable(_)
            | GatewayError::NotFamilyMember
            | GatewayError::PatientBarred { .. } => StatusCode::FORBIDDEN,
            GatewayError::DailyLimitReached { .. }
            | GatewayError::InsufficientBalance
            | GatewayError::HoldExpired { .. }
            | GatewayError::PaymentInProgress => StatusCode::CONFLICT,
            GatewayError::NotYourBooking
            | GatewayError::HospitalForbidden
            | GatewayError::OperatorForbidden(_)
            | GatewayError::PatientProofRequired
            | GatewayError::CardOfAnotherChannel
            | GatewayError::NotYourPatient
            | GatewayError::NotYourSurvey
            | GatewayError::ReferralNotAllowed(_) => StatusCode::FORBIDDEN,
            GatewayError::MemberChannelUnknown => StatusCode::CONFLICT,
            GatewayError::MemberChannelUnreachable(_) | GatewayError::SurveysUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::PaymentCallbackRequired => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::HospitalNotFound(_) | GatewayError::DeadLetterNotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::IdentityUnavailable(_)
            | GatewayError::CacheUnavailable(_)
            | GatewayError::HospitalUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let problem = Problem::new(status, self.code(), self.title()).detail(self.to_string());
        match self {
            GatewayError::Request(e) => e.error_response(),
            GatewayError::NonCanonicalPath(_) => problem.field("path").to_response(None),
            GatewayError::InternalAuthRefused => {
                tracing::error!(
                    code = self.code(),
                    "an internal service refused the gateway's token"
                );
                Problem::new(status, self.code(), self.title()).to_response(None)
            }
            GatewayError::RateLimited {
                limit,
                retry_after_seconds,
            } => problem
                .extension("limit", *limit)
                .to_response(Some(*retry_after_seconds)),
            GatewayError::PatientBarred { until } => problem
                .extension("barred_until", until.to_rfc3339())
                .to_response(None),
            GatewayError::DailyLimitReached { limit } => problem.extension("limit", *limit).to_response(None),
            GatewayError::HoldExpired { refund } => problem.extension("refund", *refund).to_response(None),
            GatewayError::PaymentInProgress => problem.to_response(Some(1)),
            GatewayError::IdentityUnavailable(reason) => {
                tracing::warn!(code = self.code(), %reason, "card-issuing failed");
                Problem::new(status, self.code(), self.title()).to_response(Some(2))
            }
            GatewayError::CacheUnavailable(reason) => {
                tracing::warn!(code = self.code(), %reason, "redis failed");
                Problem::new(status, self.code(), self.title()).to_response(Some(1))
            }
            GatewayError::HospitalUnavailable { reason, .. } => {
                tracing::warn!(code = self.code(), %reason, "upstream failed");
                problem.to_response(Some(2))
            }
            GatewayError::Unexpected(_) => {
                tracing::error!(code = self.code(), error = %self, "request failed");
                Problem::new(status, self.code(), self.title()).to_response(None)
            }
            GatewayError::PatientProofRequired => problem.field("ecard_token").to_response(None),
            GatewayError::OperatorForbidden(_) => problem.field("role").to_response(None),
            GatewayError::SurveysUnavailable(reason) => {
                tracing::warn!(code = self.code(), %reason, "channel-accounting's survey door failed");
                Problem::new(status, self.code(), self.title()).to_response(Some(2))
            }
            GatewayError::MemberChannelUnreachable(reason) => {
                tracing::warn!(code = self.code(), %reason, "a member's app did not take a code");
                Problem::new(status, self.code(), self.title()).to_response(Some(5))
            }
            _ => problem.to_response(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_the_gateway_answers_is_listed_for_the_openapi_document() {
        let all = [
            GatewayError::Request(RequestError::UnsupportedMediaType),
            GatewayError::NonCanonicalPath("x"),
            GatewayError::InternalAuthRefused,
            GatewayError::UnknownApp,
            GatewayError::BadSignature,
            GatewayError::StaleTimestamp {
                max_skew_seconds: 300,
            },
            GatewayError::ReplayedNonce,
            GatewayError::RateLimited {
                limit: "app",
                retry_after_seconds: 1,
            },
            GatewayError::CardNotFound,
            GatewayError::CardUnusable("lost"),
            GatewayError::EcardInvalid,
            GatewayError::EcardExpired,
            GatewayError::NotFamilyMember,
            GatewayError::PatientBarred { until: Utc::now() },
            GatewayError::DailyLimitReached { limit: 4 },
            GatewayError::IdentityUnavailable(String::new()),
            GatewayError::CacheUnavailable(String::new()),
            GatewayError::InsufficientBalance,
            GatewayError::HoldExpired { refund: "x" },
            GatewayError::NotYourBooking,
            GatewayError::PatientProofRequired,
            GatewayError::CardOfAnotherChannel,
            GatewayError::PaymentInProgress,
            GatewayError::PaymentCallbackRequired,
            GatewayError::OperatorUnauthorized,
            GatewayError::DeadLetterNotFound(String::new()),
            GatewayError::OperatorForbidden(String::new()),
            GatewayError::HospitalNotFound(String::new()),
            GatewayError::HospitalForbidden,
            GatewayError::HospitalUnavailable {
                hospital: String::new(),
                reason: String::new(),
            },
            GatewayError::NotYourPatient,
            GatewayError::MemberChannelUnknown,
            GatewayError::MemberChannelUnreachable(String::new()),
            GatewayError::NotYourSurvey,
            GatewayError::SurveysUnavailable(String::new()),
            GatewayError::Unexpected(anyhow::anyhow!("x")),
        ];
        for e in &all {
            assert!(ALL_CODES.contains(&e.code()), "{}", e.code());
            let res = e.error_response();
            assert_eq!(res.status(), e.status_code());
        }
        let res = GatewayError::RateLimited {
            limit: "app",
            retry_after_seconds: 7,
        }
        .error_response();
        assert_eq!(res.headers().get("retry-after").unwrap(), "7");
    }
}
