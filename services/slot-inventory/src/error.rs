//! Every error slot-inventory answers, each with a stable machine code.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use jyt_domain::{BookingRef, BookingStatus};
use jyt_web::{Problem, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("slot {0} does not exist in this hospital")]
    SlotNotFound(String),
    #[error("booking {0} does not exist in this hospital")]
    BookingNotFound(String),
    #[error("no seats are left in this time segment")]
    SlotSoldOut,
    #[error("this patient already holds booking {0} in this time segment")]
    AlreadyBooked(BookingRef),
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    RequestInProgress,
    #[error("this schedule opens for booking at {0}")]
    NotYetReleased(DateTime<Utc>),
    #[error("this clinic has been stopped")]
    ScheduleStopped,
    #[error("this patient already has a booking in this schedule")]
    ScheduleAlreadyBooked,
    #[error("this patient already has a booking in this department on this day")]
    DepartmentDailyLimit,
    #[error("this patient has reached the daily number of bookings at this hospital")]
    DailyLimit,
    #[error("the booking is already paid with another payment")]
    AlreadyConfirmed,
    #[error("the hold expired before payment; the payment must be refunded")]
    HoldExpired,
    /// The payment's reference (the channel's transaction id) already paid
    /// another booking: one payment is never booked twice. Which booking
    /// is not said; it may be another patient's.
    #[error("this payment reference already paid another booking")]
    PaymentReferenceUsed,
    #[error("the booking is {0:?}, not held")]
    BookingNotHeld(BookingStatus),
    #[error("the booking is {0:?} and cannot be cancelled")]
    BookingNotCancellable(BookingStatus),
    #[error("cancellation closed at {0}")]
    CancellationClosed(DateTime<Utc>),
    #[error("the pick-up code does not match ({attempts_left} tries left before check-in locks)")]
    WrongPickupCode { attempts_left: u32 },
    /// Too many wrong pick-up codes for this booking: check-in with a code
    /// is refused, even with the right one, so the code cannot be guessed.
    #[error(
        "check-in with the pick-up code is locked after too many wrong codes; please ask at the hospital's desk"
    )]
    PickupLocked,
    #[error("the booking is {0:?} and cannot be checked in")]
    NotCheckInable(BookingStatus),
    #[error("the booking is {0:?}; only a checked-in visit can be completed")]
    NotCompletable(BookingStatus),
    #[error("check-in is open from {opens} to {closes}")]
    CheckInClosed {
        opens: DateTime<Utc>,
        closes: DateTime<Utc>,
    },
    #[error("schedule {0} does not exist in this hospital")]
    ScheduleNotFound(String),
    #[error("this schedule still has seats; book one instead of joining its waitlist")]
    SeatsAvailable,
    #[error("this patient is already on this schedule's waitlist")]
    AlreadyWaitlisted,
    #[error("the waitlist entry is no longer waiting")]
    WaitlistEntryGone,
    #[error("doctor {0} does not exist in this hospital")]
    DoctorNotFound(String),
    #[error("doctor {0} has published no precise-appointment profile")]
    PreciseProfileNotFound(String),
    #[error("precise-appointment submission {0} does not exist in this hospital")]
    PreciseSubmissionNotFound(String),
    #[error("{0}")]
    ClinicNotSoldOut(String),
    #[error("this patient already has an open submission to this doctor")]
    PreciseAlreadySubmitted,
    #[error("the submission is {0}, no longer pending")]
    PreciseAlreadyDecided(String),
    /// The referral pool was asked for with a referral this hospital's
    /// script refused (see `booking::referral`).
    #[error("{0}")]
    Referral(crate::booking::referral::Refusal),
    /// Redis (the surge lock) is unreachable or being rebuilt: refuse
    /// cleanly rather than book without it.
    #[error("the slot lock is unavailable: {0}")]
    LockUnavailable(String),
    #[error("the booking database is unavailable: {0}")]
    DatabaseUnavailable(String),
    /// Not a failure: the attempt fell in a lottery's window and became
    /// (or answered) the patient's entry; answered `202 Accepted` with it.
    #[error("entered in the draw of schedule {}", .0.schedule_id)]
    LotteryEntered(Box<crate::lottery::entry::Entry>),
    #[error(
        "this schedule's lottery window closed at {0}; its draw is running, seats it leaves go on sale after it"
    )]
    DrawPending(DateTime<Utc>),
    #[error("lottery entry {0} does not exist in this hospital")]
    EntryNotFound(String),
    #[error("schedule {0} has no draw yet")]
    DrawNotFound(String),
    #[error("unexpected error: {0:#}")]
    Unexpected(#[from] anyhow::Error),
}

impl SlotError {
    pub fn code(&self) -> &'static str {
        match self {
            SlotError::Request(e) => e.code(),
            SlotError::SlotNotFound(_) => "SLOT_NOT_FOUND",
            SlotError::BookingNotFound(_) => "BOOKING_NOT_FOUND",
            SlotError::SlotSoldOut => "SLOT_SOLD_OUT",
            SlotError::AlreadyBooked(_) => "ALREADY_BOOKED",
            SlotError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            SlotError::RequestInProgress => "REQUEST_IN_PROGRESS",
            SlotError::NotYetReleased(_) => "NOT_YET_RELEASED",
            SlotError::ScheduleStopped => "SCHEDULE_STOPPED",
            SlotError::ScheduleAlreadyBooked => "SCHEDULE_ALREADY_BOOKED",
            SlotError::DepartmentDailyLimit => "DEPARTMENT_DAILY_LIMIT",
            SlotError::DailyLimit => "DAILY_LIMIT",
            SlotError::AlreadyConfirmed => "ALREADY_CONFIRMED",
            SlotError::HoldExpired => "HOLD_EXPIRED",
            SlotError::PaymentReferenceUsed => "PAYMENT_REFERENCE_USED",
            SlotError::BookingNotHeld(_) => "BOOKING_NOT_HELD",
            SlotError::BookingNotCancellable(_) => "BOOKING_NOT_CANCELLABLE",
            SlotError::CancellationClosed(_) => "CANCELLATION_CLOSED",
            SlotError::WrongPickupCode { .. } => "WRONG_PICKUP_CODE",
            SlotError::PickupLocked => "PICKUP_LOCKED",
            SlotError::NotCheckInable(_) => "NOT_CHECK_INABLE",
            SlotError::NotCompletable(_) => "NOT_COMPLETABLE",
            SlotError::CheckInClosed { .. } => "CHECK_IN_CLOSED",
            SlotError::ScheduleNotFound(_) => "SCHEDULE_NOT_FOUND",
            SlotError::SeatsAvailable => "SEATS_AVAILABLE",
            SlotError::AlreadyWaitlisted => "ALREADY_WAITLISTED",
            SlotError::WaitlistEntryGone => "WAITLIST_ENTRY_GONE",
            SlotError::DoctorNotFound(_) => "DOCTOR_NOT_FOUND",
            SlotError::PreciseProfileNotFound(_) => "PRECISE_PROFILE_NOT_FOUND",
            SlotError::PreciseSubmissionNotFound(_) => "PRECISE_SUBMISSION_NOT_FOUND",
            SlotError::ClinicNotSoldOut(_) => "CLINIC_NOT_SOLD_OUT",
            SlotError::PreciseAlreadySubmitted => "PRECISE_ALREADY_SUBMITTED",
            SlotError::PreciseAlreadyDecided(_) => "PRECISE_ALREADY_DECIDED",
            SlotError::Referral(r) => r.code(),
            SlotError::LockUnavailable(_) => "SLOT_LOCK_UNAVAILABLE",
            SlotError::DatabaseUnavailable(_) => "DATABASE_UNAVAILABLE",
            SlotError::LotteryEntered(_) => "LOTTERY_ENTERED",
            SlotError::DrawPending(_) => "LOTTERY_DRAW_PENDING",
            SlotError::EntryNotFound(_) => "ENTRY_NOT_FOUND",
            SlotError::DrawNotFound(_) => "DRAW_NOT_FOUND",
            SlotError::Unexpected(_) => "INTERNAL_ERROR",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            SlotError::RequestInProgress
            | SlotError::DrawPending(_)
            | SlotError::LockUnavailable(_)
            | SlotError::DatabaseUnavailable(_) => Some(1),
            _ => None,
        }
    }
}

impl From<jyt_db::DbError> for SlotError {
    fn from(e: jyt_db::DbError) -> Self {
        SlotError::DatabaseUnavailable(e.to_string())
    }
}

impl From<jyt_db::tokio_postgres::Error> for SlotError {
    fn from(e: jyt_db::tokio_postgres::Error) -> Self {
        SlotError::DatabaseUnavailable(e.to_string())
    }
}

impl From<jyt_db::deadpool_postgres::PoolError> for SlotError {
    fn from(e: jyt_db::deadpool_postgres::PoolError) -> Self {
        SlotError::DatabaseUnavailable(e.to_string())
    }
}

impl From<jyt_cache::redis::RedisError> for SlotError {
    fn from(e: jyt_cache::redis::RedisError) -> Self {
        SlotError::LockUnavailable(e.to_string())
    }
}

impl ResponseError for SlotError {
    fn status_code(&self) -> StatusCode {
        match self {
            SlotError::Request(e) => e.status_code(),
            SlotError::SlotNotFound(_)
            | SlotError::BookingNotFound(_)
            | SlotError::ScheduleNotFound(_)
            | SlotError::DoctorNotFound(_)
            | SlotError::PreciseProfileNotFound(_)
            | SlotError::PreciseSubmissionNotFound(_)
            | SlotError::EntryNotFound(_)
            | SlotError::DrawNotFound(_) => StatusCode::NOT_FOUND,
            SlotError::LotteryEntered(_) => StatusCode::ACCEPTED,
            SlotError::SeatsAvailable
            | SlotError::AlreadyWaitlisted
            | SlotError::WaitlistEntryGone
            | SlotError::ClinicNotSoldOut(_)
            | SlotError::PreciseAlreadySubmitted
            | SlotError::PreciseAlreadyDecided(_) => StatusCode::CONFLICT,
            SlotError::SlotSoldOut
            | SlotError::DrawPending(_)
            | SlotError::AlreadyBooked(_)
            | SlotError::RequestInProgress
            | SlotError::IdempotencyKeyReused
            | SlotError::NotYetReleased(_)
            | SlotError::ScheduleStopped
            | SlotError::ScheduleAlreadyBooked
            | SlotError::DepartmentDailyLimit
            | SlotError::DailyLimit
            | SlotError::AlreadyConfirmed
            | SlotError::HoldExpired
            | SlotError::PaymentReferenceUsed
            | SlotError::BookingNotHeld(_)
            | SlotError::BookingNotCancellable(_)
            | SlotError::CancellationClosed(_)
            | SlotError::NotCheckInable(_)
            | SlotError::NotCompletable(_)
            | SlotError::CheckInClosed { .. } => StatusCode::CONFLICT,
            SlotError::Referral(r) => r.status(),
            SlotError::WrongPickupCode { .. } => StatusCode::FORBIDDEN,
            SlotError::PickupLocked => StatusCode::LOCKED,
            SlotError::LockUnavailable(_) | SlotError::DatabaseUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            SlotError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        let problem = match self {
            SlotError::Request(e) => return e.error_response(),
            SlotError::LotteryEntered(entry) => {
                return HttpResponse::Accepted()
                    .insert_header(("Location", format!("/v1/draw-entries/{}", entry.entry_id)))
                    .json(entry);
            }
            SlotError::DrawPending(at) => Problem::new(status, self.code(), "Lottery draw pending")
                .detail(self.to_string())
                .extension("draw_at", jyt_domain::time::local(*at).to_rfc3339()),
            // Internal details stay in the log, not in the answer.
            SlotError::Unexpected(_) => Problem::new(status, self.code(), "Internal error"),
            SlotError::LockUnavailable(_) => {
                Problem::new(status, self.code(), "Booking is briefly unavailable")
                    .detail("the slot lock is unavailable; retry shortly")
            }
            SlotError::DatabaseUnavailable(_) => {
                Problem::new(status, self.code(), "Booking is briefly unavailable")
                    .detail("the booking database is unavailable; retry shortly")
            }
            SlotError::NotYetReleased(at) => Problem::new(status, self.code(), "Not yet released")
                .detail(self.to_string())
                .extension("release_at", jyt_domain::time::local(*at).to_rfc3339()),
            SlotError::CancellationClosed(at) => Problem::new(status, self.code(), "Cancellation closed")
                .detail(self.to_string())
                .extension("deadline", jyt_domain::time::local(*at).to_rfc3339()),
            SlotError::CheckInClosed { opens, closes } => {
                Problem::new(status, self.code(), "Check-in closed")
                    .detail(self.to_string())
                    .extension("opens_at", jyt_domain::time::local(*opens).to_rfc3339())
                    .extension("closes_at", jyt_domain::time::local(*closes).to_rfc3339())
            }
            SlotError::WrongPickupCode { attempts_left } => {
                Problem::new(status, self.code(), "Wrong pick-up code")
                    .detail(self.to_string())
                    .field("pickup_code")
                    .extension("attempts_left", *attempts_left)
            }
            SlotError::PickupLocked => Problem::new(status, self.code(), "Check-in locked")
                .detail(self.to_string())
                .field("pickup_code")
                .extension("attempts_left", 0),
            SlotError::PaymentReferenceUsed => Problem::new(status, self.code(), "Payment reference used")
                .detail(self.to_string())
                .field("payment_reference"),
            SlotError::Referral(_) => Problem::new(status, self.code(), "Referral refused")
                .detail(self.to_string())
                .field("referral_id"),
            SlotError::AlreadyBooked(existing) => Problem::new(status, self.code(), "Already booked")
                .detail(self.to_string())
                .extension("booking_id", existing.to_string()),
            _ => Problem::new(status, self.code(), status.canonical_reason().unwrap_or("Error"))
                .detail(self.to_string()),
        };
        problem.to_response(self.retry_after())
    }
}
