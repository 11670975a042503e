//! Every error card-issuing answers, each with a stable machine code,
//! mapped to HTTP in one place. Messages never carry personal data.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use jyt_web::{Problem, RequestError};
use uuid::Uuid;

use crate::cards::CardStatus;
use crate::crypto::CryptoError;
use crate::ecard::EcardTokenError;
use crate::identity::IdNumberError;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("`id_number`: {0}")]
    IdNumber(IdNumberError),
    #[error("person {0} does not exist")]
    PersonNotFound(Uuid),
    #[error("no person is registered with this ID number")]
    PersonNotRegistered,
    #[error("this ID number is registered under a different name")]
    IdentityConflict,
    #[error("no such card")]
    CardNotFound,
    #[error("this person already has a live {0} card")]
    CardAlreadyIssued(&'static str),
    #[error("chip serial is already on another card")]
    ChipSerialInUse,
    #[error("the card is {}", .0.as_str())]
    CardUnusable(CardStatus),
    #[error("e-card tokens are issued for e-cards only")]
    NotAnEcard,
    #[error(transparent)]
    EcardToken(#[from] EcardTokenError),
    #[error("the balance ({balance_fen} fen) does not cover this debit")]
    InsufficientBalance { balance_fen: i64 },
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error("reference `{0}` was already used for a different request")]
    ReferenceReused(String),
    #[error("no fee payment with reference `{0}` on this card")]
    PaymentNotFound(String),
    #[error("the refund would exceed what was paid ({remaining_fen} fen refundable)")]
    RefundExceedsPayment { remaining_fen: i64 },
    #[error("the holder has made {limit} new bindings this month, the most allowed")]
    HolderMonthlyLimit { limit: i64 },
    #[error("this person has been bound {limit} times this month, the most allowed")]
    MemberMonthlyLimit { limit: i64 },
    #[error("a member under {age} is bound with a guardian relationship proof (`guardian_proof_ref`)")]
    GuardianProofRequired { age: u32 },
    #[error(
        "a member aged {age} or over confirms themself with a one-time code (POST /v1/persons/{{holder}}/family/verifications)"
    )]
    MemberVerificationRequired { age: u32 },
    #[error("no such family binding")]
    BindingNotFound,
    #[error("only the holder or the member may unbind")]
    NotBindingParty,
    #[error("an operator bearer token is required")]
    OperatorUnauthorized,
    #[error("no such no-show for this person")]
    NoShowNotFound,
    #[error("this no-show was waived already; there is nothing to appeal")]
    NoShowAlreadyWaived,
    #[error("no such appeal")]
    AppealNotFound,
    #[error("this appeal was decided already")]
    AppealAlreadyDecided,
    #[error("no such family verification for this holder")]
    VerificationNotFound,
    #[error("the verification code is wrong")]
    VerificationCodeWrong { attempts_left: i32 },
    #[error("the verification code has expired; ask for a new one")]
    VerificationExpired,
    #[error("too many wrong codes: this verification is locked; ask for a new one")]
    VerificationLocked,
    #[error("this verification was confirmed already")]
    VerificationUsed,
    #[error("no such family doctor team at this hospital")]
    TeamNotFound,
    #[error("the family doctor team has no place left ({capacity} residents signed)")]
    TeamFull { capacity: i32 },
    #[error("this person already has an active family doctor signing, until {0}")]
    AlreadySigned(chrono::DateTime<chrono::Utc>),
    #[error("no such family doctor signing of this person")]
    SigningNotFound,
    #[error("personal data could not be opened: {0}")]
    Crypto(#[from] CryptoError),
    #[error("the card database is unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("unexpected error: {0:#}")]
    Unexpected(#[from] anyhow::Error),
}

impl CardError {
    pub fn code(&self) -> &'static str {
        match self {
            CardError::Request(e) => e.code(),
            CardError::IdNumber(e) => e.code(),
            CardError::PersonNotFound(_) | CardError::PersonNotRegistered => "PERSON_NOT_FOUND",
            CardError::IdentityConflict => "IDENTITY_CONFLICT",
            CardError::CardNotFound => "CARD_NOT_FOUND",
            CardError::CardAlreadyIssued(_) => "CARD_ALREADY_ISSUED",
            CardError::ChipSerialInUse => "CHIP_SERIAL_IN_USE",
            CardError::CardUnusable(CardStatus::Lost) => "CARD_LOST",
            CardError::CardUnusable(CardStatus::Replaced) => "CARD_REPLACED",
            CardError::CardUnusable(CardStatus::Cancelled) => "CARD_CANCELLED",
            CardError::CardUnusable(CardStatus::Active) => "CARD_ACTIVE",
            CardError::NotAnEcard => "NOT_AN_ECARD",
            CardError::EcardToken(EcardTokenError::Invalid) => "ECARD_TOKEN_INVALID",
            CardError::EcardToken(EcardTokenError::Expired) => "ECARD_TOKEN_EXPIRED",
            CardError::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            CardError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            CardError::ReferenceReused(_) => "REFERENCE_REUSED",
            CardError::PaymentNotFound(_) => "PAYMENT_NOT_FOUND",
            CardError::RefundExceedsPayment { .. } => "REFUND_EXCEEDS_PAYMENT",
            CardError::HolderMonthlyLimit { .. } => "FAMILY_HOLDER_MONTHLY_LIMIT",
            CardError::MemberMonthlyLimit { .. } => "FAMILY_MEMBER_MONTHLY_LIMIT",
            CardError::GuardianProofRequired { .. } => "GUARDIAN_PROOF_REQUIRED",
            CardError::MemberVerificationRequired { .. } => "MEMBER_VERIFICATION_REQUIRED",
            CardError::BindingNotFound => "BINDING_NOT_FOUND",
            CardError::NotBindingParty => "NOT_BINDING_PARTY",
            CardError::OperatorUnauthorized => "OPERATOR_UNAUTHORIZED",
            CardError::NoShowNotFound => "NO_SHOW_NOT_FOUND",
            CardError::NoShowAlreadyWaived => "NO_SHOW_ALREADY_WAIVED",
            CardError::AppealNotFound => "APPEAL_NOT_FOUND",
            CardError::AppealAlreadyDecided => "APPEAL_ALREADY_DECIDED",
            CardError::VerificationNotFound => "VERIFICATION_NOT_FOUND",
            CardError::VerificationCodeWrong { .. } => "VERIFICATION_CODE_WRONG",
            CardError::VerificationExpired => "VERIFICATION_EXPIRED",
            CardError::VerificationLocked => "VERIFICATION_LOCKED",
            CardError::VerificationUsed => "VERIFICATION_USED",
            CardError::TeamNotFound => "TEAM_NOT_FOUND",
            CardError::TeamFull { .. } => "TEAM_FULL",
            CardError::AlreadySigned(_) => "ALREADY_SIGNED",
            CardError::SigningNotFound => "SIGNING_NOT_FOUND",
            CardError::Crypto(_) | CardError::Unexpected(_) => "INTERNAL_ERROR",
            CardError::DatabaseUnavailable(_) => "DATABASE_UNAVAILABLE",
        }
    }

    /// The request field at fault, when there is one.
    fn field(&self) -> Option<&'static str> {
        match self {
            CardError::IdNumber(_) | CardError::IdentityConflict => Some("id_number"),
            CardError::ChipSerialInUse => Some("chip_serial"),
            CardError::ReferenceReused(_) => Some("reference"),
            CardError::IdempotencyKeyReused => Some(jyt_web::extract::IDEMPOTENCY_KEY),
            CardError::PaymentNotFound(_) => Some("refund_of"),
            CardError::RefundExceedsPayment { .. } | CardError::InsufficientBalance { .. } => {
                Some("amount_fen")
            }
            CardError::GuardianProofRequired { .. } => Some("guardian_proof_ref"),
            CardError::EcardToken(_) => Some("ecard_token"),
            CardError::VerificationCodeWrong { .. } => Some("code"),
            _ => None,
        }
    }
}

impl From<jyt_db::DbError> for CardError {
    fn from(e: jyt_db::DbError) -> Self {
        CardError::DatabaseUnavailable(e.to_string())
    }
}

impl From<jyt_db::tokio_postgres::Error> for CardError {
    fn from(e: jyt_db::tokio_postgres::Error) -> Self {
        CardError::DatabaseUnavailable(e.to_string())
    }
}

impl From<jyt_db::deadpool_postgres::PoolError> for CardError {
    fn from(e: jyt_db::deadpool_postgres::PoolError) -> Self {
        CardError::DatabaseUnavailable(e.to_string())
    }
}

impl ResponseError for CardError {
    fn status_code(&self) -> StatusCode {
        match self {
            CardError::Request(e) => e.status_code(),
            CardError::IdNumber(_) => StatusCode::BAD_REQUEST,
            CardError::PersonNotFound(_)
            | CardError::PersonNotRegistered
            | CardError::CardNotFound
            | CardError::BindingNotFound
            | CardError::NoShowNotFound
            | CardError::AppealNotFound
            | CardError::VerificationNotFound
            | CardError::TeamNotFound
            | CardError::SigningNotFound
            | CardError::PaymentNotFound(_) => StatusCode::NOT_FOUND,
            CardError::IdentityConflict
            | CardError::CardAlreadyIssued(_)
            | CardError::ChipSerialInUse
            | CardError::NotAnEcard
            | CardError::InsufficientBalance { .. }
            | CardError::ReferenceReused(_)
            | CardError::IdempotencyKeyReused
            | CardError::RefundExceedsPayment { .. }
            | CardError::HolderMonthlyLimit { .. }
            | CardError::MemberMonthlyLimit { .. }
            | CardError::NoShowAlreadyWaived
            | CardError::AppealAlreadyDecided
            | CardError::VerificationUsed
            | CardError::VerificationExpired
            | CardError::VerificationLocked
            | CardError::TeamFull { .. }
            | CardError::AlreadySigned(_) => StatusCode::CONFLICT,
            CardError::VerificationCodeWrong { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CardError::CardUnusable(_) | CardError::NotBindingParty => StatusCode::FORBIDDEN,
            CardError::GuardianProofRequired { .. } | CardError::MemberVerificationRequired { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            CardError::EcardToken(_) | CardError::OperatorUnauthorized => StatusCode::UNAUTHORIZED,
            CardError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CardError::Crypto(_) | CardError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        let mut problem = match self {
            CardError::Request(e) => return e.error_response(),
            // Internal details stay in the log, not in the answer.
            CardError::Crypto(_) | CardError::Unexpected(_) => {
                Problem::new(status, self.code(), "Internal error")
            }
            CardError::DatabaseUnavailable(_) => Problem::new(status, self.code(), "Briefly unavailable")
                .detail("the card database is unavailable; retry shortly"),
            _ => Problem::new(status, self.code(), status.canonical_reason().unwrap_or("Error"))
                .detail(self.to_string()),
        };
        if let Some(field) = self.field() {
            problem = problem.field(field);
        }
        match self {
            CardError::InsufficientBalance { balance_fen } => {
                problem = problem.extension("balance_fen", *balance_fen);
            }
            CardError::HolderMonthlyLimit { limit } | CardError::MemberMonthlyLimit { limit } => {
                problem = problem.extension("limit", *limit);
            }
            CardError::VerificationCodeWrong { attempts_left } => {
                problem = problem.extension("attempts_left", *attempts_left);
            }
            CardError::TeamFull { capacity } => {
                problem = problem.extension("capacity", *capacity);
            }
            CardError::AlreadySigned(until) => {
                problem = problem.extension("active_until", until.to_rfc3339());
            }
            _ => {}
        }
        let retry_after = matches!(self, CardError::DatabaseUnavailable(_)).then_some(1);
        let mut res = problem.to_response(retry_after);
        if matches!(self, CardError::OperatorUnauthorized) {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"jyt-operators\""),
            );
        }
        res
    }
}
